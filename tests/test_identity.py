"""Client identity from /proc, SO_PEERCRED and cgroup paths (no eBPF needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from agent.identity import describe_process, parse_cgroup, peer_credentials


def test_parse_cgroup_names_units_and_containers() -> None:
    cid = "a" * 64
    assert parse_cgroup("/system.slice/billing\\x2dapi.service") == ("billing-api.service", None)
    assert parse_cgroup("/user.slice/user-1000.slice/session-3.scope") == ("session-3.scope", None)
    assert parse_cgroup(f"/system.slice/docker-{cid}.scope") == (None, cid)
    assert parse_cgroup(f"/kubepods.slice/kubepods-pod1.slice/cri-containerd-{cid}.scope") == (None, cid)
    assert parse_cgroup(f"/machine.slice/libpod-{cid}.scope/container") == (None, cid)
    assert parse_cgroup("/lxc.payload.web1/init.scope") == (None, "web1")
    assert parse_cgroup("/") == (None, None)
    assert parse_cgroup(None) == (None, None)


def test_describe_process_reads_proc() -> None:
    me = describe_process(os.getpid())
    assert me.pid == os.getpid()
    assert me.exe == os.path.realpath(sys.executable) or me.exe == os.readlink("/proc/self/exe")
    assert me.cmdline and "pytest" in me.cmdline
    assert me.uid == os.getuid()


def test_peer_credentials_name_the_connecting_process(tmp_path: Path) -> None:
    path = str(tmp_path / ".s.PGSQL.5999")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)
        client = subprocess.Popen([sys.executable, "-c",
                                   "import socket,sys,time; s=socket.socket(socket.AF_UNIX); "
                                   f"s.connect({path!r}); sys.stdin.read()"], stdin=subprocess.PIPE)
        conn, _ = server.accept()
        try:
            creds = peer_credentials(os.getpid(), conn.fileno())
            assert creds is not None
            assert creds[0] == client.pid and creds[1] == os.getuid()
            assert peer_credentials(os.getpid(), 987654) is None  # not an fd
        finally:
            client.communicate(b"")
            conn.close()


def test_peer_credentials_of_a_tcp_socket_is_none() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()):
            conn, _ = server.accept()
            with conn:
                assert peer_credentials(os.getpid(), conn.fileno()) is None

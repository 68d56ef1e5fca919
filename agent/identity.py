"""Who is on the other end of a backend: the local client process and its service.

Sources, best first:

- unix sockets: SO_PEERCRED of the backend's client socket, read through pidfd_getfd(2)
  (Linux 5.6+; needs ptrace rights over the backend, which root has): the exact client pid/uid
  the kernel recorded at connect();
- TCP on this host: the probes' TCP_CONNECT event (kernel-side, taken inside the client's own
  connect()), joined with the backend's peer address and port from accept();
- unix sockets whose backend is already gone: the probes' UNIX_CONNECT events for that port, in
  order (first connect, first accept);
- a backend that predates the agent: the owner of the peer socket found through /proc.

Process details come from /proc/PID (exe, cmdline, uid, cgroup) as soon as the connect is seen,
so short-lived clients are still described; when the process is already gone, what the kernel
recorded (comm, the file it exec'ed, uid, cgroup id) is used. Service identity is parsed from
the cgroup path the way Coroot does (coroot-node-agent cgroup/cgroup.go): systemd units
(`system.slice/NAME.service`), Docker, containerd/CRI-O, Podman and LXC containers.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import socket
import struct
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from agent.events import CtlEvent

_SYS_PIDFD_GETFD = 438  # x86_64 and arm64 (asm-generic) syscall number
_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
_CONTAINER = re.compile(
    r"(?:docker-|/docker/|cri-containerd-|crio-|libpod-|/containerd/)(?P<id>[0-9a-f]{64})")
_LXC = re.compile(r"lxc\.payload\.(?P<id>[^/]+)")
_UNIT = re.compile(r"/(?P<unit>[^/]+\.(?:service|scope))$")
CONNECT_TTL_S = 120.0


@dataclass(frozen=True, slots=True)
class ClientProcess:
    """A client process as the events schema ships it (docs/events.md, `client`)."""

    pid: int
    uid: int | None = None
    user: str | None = None
    exe: str | None = None
    cmdline: str | None = None
    comm: str | None = None
    cgroup: str | None = None
    systemd_unit: str | None = None
    container_id: str | None = None

    def to_event(self) -> dict[str, object]:
        return asdict(self)


def parse_cgroup(path: str | None) -> tuple[str | None, str | None]:
    """(systemd unit, container id) named by a cgroup path; None where it names none."""
    if not path:
        return None, None
    m = _CONTAINER.search(path)
    if m:
        return None, m["id"]
    m = _LXC.search(path)
    if m:
        return None, m["id"]
    m = _UNIT.search(path)
    return (m["unit"].replace("\\x2d", "-") if m else None), None


def _cgroup_of(pid: int) -> str | None:
    """The process's cgroup v2 path, or the name=systemd v1 one on hybrid hosts."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    by_hierarchy = dict(line.split(":", 2)[1:] for line in lines if line.count(":") >= 2)
    for key in ("", "name=systemd"):
        path = by_hierarchy.get(key)
        if path and path != "/":
            return path
    return by_hierarchy.get("") or by_hierarchy.get("name=systemd")


def _user_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def describe_process(pid: int, fallback: CtlEvent | None = None) -> ClientProcess:
    """Read what /proc tells of `pid`; fill the gaps from the kernel's event when it is gone."""
    proc = Path(f"/proc/{pid}")
    exe = cmdline = comm = None
    uid = None
    try:
        exe = os.readlink(proc / "exe")
    except OSError:
        pass
    try:
        raw = (proc / "cmdline").read_bytes()
        cmdline = " ".join(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")) or None
    except OSError:
        pass
    try:
        comm = (proc / "comm").read_text().strip()
        uid = os.stat(proc).st_uid
    except OSError:
        pass
    cgroup = _cgroup_of(pid)
    if fallback is not None:
        exe = exe or fallback.exe or None
        comm = comm or fallback.comm or None
        uid = fallback.uid if uid is None else uid
    unit, container = parse_cgroup(cgroup)
    return ClientProcess(pid, uid, _user_name(uid), exe, cmdline, comm, cgroup, unit, container)


def peer_credentials(backend_pid: int, fd: int) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the peer of unix socket `fd` in process `backend_pid`, or None."""
    try:
        pidfd = os.pidfd_open(backend_pid)
    except OSError:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        dup = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            return None
        with socket.socket(fileno=dup) as sock:
            if sock.family != socket.AF_UNIX:
                return None
            pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          _UCRED.size))
            return (pid, uid, gid) if pid > 0 else None
    except OSError:
        return None
    finally:
        os.close(pidfd)


class ClientTracker:
    """Matches backends to the client connects the probes saw.

    `seen_tcp`/`seen_unix` take CTL_TCP_CONNECT/CTL_UNIX_CONNECT events (the process is described
    at once, while it is alive); `for_backend` answers (client, identity_source) for a new backend.
    Entries expire after CONNECT_TTL_S seconds.
    """

    def __init__(self) -> None:
        self._tcp: dict[tuple[str, int], tuple[float, ClientProcess]] = {}
        self._unix: dict[int, deque[tuple[float, ClientProcess]]] = {}

    def seen_tcp(self, ev: CtlEvent) -> None:
        self._expire()
        if ev.local_addr is not None:
            self._tcp[(ev.local_addr, ev.local_port)] = (time.monotonic(), describe_process(ev.tgid, ev))

    def seen_unix(self, ev: CtlEvent) -> None:
        self._expire()
        self._unix.setdefault(ev.remote_port, deque()).append(
            (time.monotonic(), describe_process(ev.tgid, ev)))

    def for_backend(self, backend_pid: int, fd: int, family: int, peer_addr: str | None,
                    peer_port: int, server_ports: tuple[int, ...]) -> tuple[ClientProcess | None, str | None]:
        if family == socket.AF_UNIX:
            return self._for_unix(backend_pid, fd, server_ports)
        if peer_addr is None:
            return None, None
        hit = self._tcp.pop((peer_addr, peer_port), None)
        return (hit[1], "tcp_connect") if hit else (None, None)

    def _for_unix(self, backend_pid: int, fd: int,
                  server_ports: tuple[int, ...]) -> tuple[ClientProcess | None, str | None]:
        creds = peer_credentials(backend_pid, fd)
        queues = [self._unix[p] for p in server_ports if p in self._unix] or list(self._unix.values())
        if creds is not None:
            pid, uid, _ = creds
            for q in queues:  # prefer the snapshot taken at connect time (the client may be gone)
                for i, (_, client) in enumerate(q):
                    if client.pid == pid:
                        del q[i]
                        return client, "peercred"
            client = describe_process(pid)
            return (client if client.uid is not None else replace(client, uid=uid,
                                                                  user=_user_name(uid))), "peercred"
        for q in queues:  # backend already gone: first connect, first accept
            if q:
                return q.popleft()[1], "unix_connect"
        return None, None

    def _expire(self) -> None:
        horizon = time.monotonic() - CONNECT_TTL_S
        for key in [k for k, (t, _) in self._tcp.items() if t < horizon]:
            del self._tcp[key]
        for q in self._unix.values():
            while q and q[0][0] < horizon:
                q.popleft()

"""Finding PostgreSQL on this host from /proc: postmasters, their binaries, ports and backends.

Used at agent start (and periodically, as a safety net: the probes also see postmasters exec'ed
later). A postmaster is a process named `postgres` whose parent is not one; a client backend is a
child of a postmaster holding a connected socket (its client connection). Everything here is a
best-effort read of /proc: processes may vanish at any moment, which yields "not found", never an
exception.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")

# "postgres: [cluster_name: ]user database host(port) activity" (src/backend/utils/init/postinit.c
# and ps_status.c: init_ps_display)
_TITLE = re.compile(r"^postgres: (?:[^:]+: )?(?P<user>\S+) (?P<database>\S+) "
                    r"(?:\[local\]|(?P<addr>[^\s(]+)\((?P<port>\d+)\))")
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Postmaster:
    pid: int
    exe: str  # path usable to attach uprobes (/proc/PID/exe resolves inside containers too)
    ports: tuple[int, ...]


@dataclass(frozen=True)
class ExistingBackend:
    """A client backend that was running before the agent attached."""

    pid: int
    postmaster_pid: int
    fd: int  # its client socket
    user: str | None
    database: str | None
    start_ticks: int  # /proc/PID/stat starttime (clock ticks since boot)
    peer_addr: str | None  # None for a unix-socket client ("[local]" in the title)
    peer_port: int | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _comm(pid: int) -> str | None:
    text = _read(PROC / str(pid) / "comm")
    return text.strip() if text else None


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 = state, 1 = ppid, 19 = starttime)."""
    text = _read(PROC / str(pid) / "stat")
    if not text:
        return None
    return text[text.rfind(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def parent_pid(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir(PROC) if p.isdigit()]


def socket_inodes(pid: int) -> dict[int, int]:
    """fd -> socket inode for the sockets process `pid` holds."""
    fds: dict[int, int] = {}
    fd_dir = PROC / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return fds
    for name in names:
        try:
            target = os.readlink(fd_dir / name)
        except OSError:
            continue
        if target.startswith("socket:["):
            fds[int(name)] = int(target[8:-1])
    return fds


def _tcp_table(pid: int, state: str | None = None) -> list[tuple[str, int, str, int, str, int]]:
    """(local addr, local port, remote addr, remote port, state hex, inode) in PID's net namespace;
    only rows in `state` (e.g. LISTEN) when given, tested before the row is parsed: on a busy
    host the tables hold thousands of established connections."""
    rows = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        text = _read(PROC / str(pid) / "net" / name) or ""
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) < 10 or (state is not None and parts[3] != state):
                continue
            (laddr, lport), (raddr, rport) = (p.split(":") for p in parts[1:3])
            rows.append((_hex_addr(laddr, family), int(lport, 16), _hex_addr(raddr, family),
                         int(rport, 16), parts[3], int(parts[9])))
    return rows


def _hex_addr(text: str, family: int) -> str:
    raw = bytes.fromhex(text)
    # /proc/net/tcp prints each 32-bit word in host (little-endian) order
    words = b"".join(struct.pack("<I", w) for w in struct.unpack(f">{len(raw) // 4}I", raw))
    addr = socket.inet_ntop(family, words)
    return addr[7:] if addr.startswith("::ffff:") else addr


def listen_ports(pid: int) -> tuple[int, ...]:
    """TCP ports the process listens on."""
    inodes = set(socket_inodes(pid).values())
    return tuple(sorted({lport for _, lport, _, _, _, ino in _tcp_table(pid, _TCP_LISTEN)
                         if ino in inodes}))


def find_postmasters() -> list[Postmaster]:
    found = []
    for pid in _pids():
        if _comm(pid) != "postgres":
            continue
        ppid = parent_pid(pid)
        if ppid is None or _comm(ppid) == "postgres":
            continue
        if not os.path.exists(f"/proc/{pid}/exe"):
            continue
        found.append(Postmaster(pid, f"/proc/{pid}/exe", listen_ports(pid)))
    return found


def find_backends(postmaster_pid: int) -> list[ExistingBackend]:
    """Client backends of a postmaster: children with a connected socket and a session title."""
    found = []
    for pid in _pids():
        if parent_pid(pid) != postmaster_pid:
            continue
        title = (_read(PROC / str(pid) / "cmdline") or "").replace("\0", " ").strip()
        m = _TITLE.match(title)
        sockets = socket_inodes(pid)
        ticks = start_ticks(pid)
        if not m or not sockets or ticks is None:
            continue  # background workers (checkpointer, autovacuum...) have no client socket
        fd = min(sockets)
        port = int(m["port"]) if m["port"] else None
        found.append(ExistingBackend(pid, postmaster_pid, fd, m["user"], m["database"], ticks,
                                     m["addr"], port))
    return found


def tcp_socket_owner(local_addr: str, local_port: int) -> int | None:
    """The pid of the process holding the TCP socket bound to local_addr:local_port, if any."""
    for laddr, lport, _, _, _, ino in _tcp_table(os.getpid()):
        if lport != local_port or laddr != local_addr:
            continue
        target = f"socket:[{ino}]"
        for pid in _pids():
            fd_dir = PROC / str(pid) / "fd"
            try:
                for name in os.listdir(fd_dir):
                    if os.readlink(fd_dir / name) == target:
                        return pid
            except OSError:
                continue
    return None

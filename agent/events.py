"""Ring-buffer records of the probes, as Python values. Mirrors probes/events.h exactly.

Two record kinds:

- data records (ring `data_events`): a 32-byte header `DATA_HEADER` followed by `len` payload
  bytes, one chunk of a backend's client stream. They stay as (header tuple, memoryview) on the
  hot path; no object is built per record.
- control records (ring `ctl_events`): fixed 232-byte `struct ctl_event`, decoded into `CtlEvent`.

tests/test_probes_layout.py compiles probes/events.h with the host C compiler and checks every
size and offset against the structs here.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import struct
from dataclasses import dataclass

# struct data_event header: ts_ns, pos, tgid, gen, len, direction, source, flags
DATA_HEADER = struct.Struct("<QQIIIBBH")
DATA_HEADER_SIZE = 32
CHUNK_MAX = 8192

DIR_FRONTEND = 0  # client -> server (secure_read / recvfrom)
DIR_BACKEND = 1  # server -> client (secure_write / sendto)

SOURCE_SECURE_RW = 1
SOURCE_SYSCALL = 2

# struct ctl_event
CTL_EVENT = struct.Struct("<QQIIIIiIQHHHH16s16s16s128s")
CTL_EVENT_SIZE = 232

# struct backend (map `backends` value): rd_pos, wr_pos, rd_buf, wr_buf, gen, fd, flags, pad
BACKEND = struct.Struct("<QQQQIiII")
BACKEND_JOINED = 1


class CtlKind(enum.IntEnum):
    """enum ctl_kind in probes/events.h."""

    BACKEND_START = 1
    BACKEND_EXIT = 2
    POSTMASTER_EXEC = 3
    POSTMASTER_EXIT = 4
    TCP_CONNECT = 5
    UNIX_CONNECT = 6


# enum stat in probes/events.h, in order. Names starting with "drop_" are losses.
STAT_NAMES = (
    "data_events",
    "data_bytes",
    "drop_ringbuf_full",
    "drop_busy",
    "drop_read_fail",
    "drop_oversize_bytes",
    "drop_no_entry",
    "ctl_events",
    "drop_ctl_ringbuf_full",
    "joined_skips",
)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _addr(family: int, raw: bytes) -> str | None:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == socket.AF_INET6:
        addr = ipaddress.IPv6Address(raw[:16])
        return str(addr.ipv4_mapped or addr)
    return None


@dataclass(frozen=True, slots=True)
class CtlEvent:
    """One decoded `struct ctl_event`. Addresses are text (None for unix sockets).

    BACKEND_START: tgid = backend pid, ptgid = postmaster, fd = client socket, local_* = the
    peer (client) address the postmaster's accept() returned. TCP_CONNECT: tgid = client pid,
    local_* = client address/port, remote_* = server address/port. UNIX_CONNECT: tgid = client
    pid, remote_port = PostgreSQL port from the socket file name.
    """

    ts_ns: int
    boot_ns: int
    kind: CtlKind
    tgid: int
    ptgid: int
    gen: int
    fd: int
    uid: int
    cgroup_id: int
    family: int
    local_addr: str | None
    local_port: int
    remote_addr: str | None
    remote_port: int
    comm: str
    exe: str

    @classmethod
    def decode(cls, record: bytes | memoryview) -> CtlEvent:
        """Decode a ctl ring record; raises struct.error/ValueError if it is not one."""
        (ts_ns, boot_ns, kind, tgid, ptgid, gen, fd, uid, cgroup_id, family, lport, rport, _pad,
         laddr, raddr, comm, exe) = CTL_EVENT.unpack_from(record, 0)
        return cls(ts_ns, boot_ns, CtlKind(kind), tgid, ptgid, gen, fd, uid, cgroup_id, family,
                   _addr(family, laddr), lport, _addr(family, raddr), rport, _cstr(comm),
                   _cstr(exe))

"""Loading, attaching and reading the eBPF probes (the only module that imports bcc).

`Probes` compiles probes/*.c with bcc, attaches the data hooks (uprobe + uretprobe on
`secure_read`/`secure_write` of each postgres binary, or the recvfrom/sendto tracepoint fallback),
seeds the maps user space owns (postmasters, pre-existing backends, PostgreSQL ports) and exposes
the two ring buffers as `RingReader`s.

`RingReader` consumes a BPF ring buffer through mmap instead of bcc's callback-per-record
`ring_buffer_poll`: a ctypes callback per record was the bottleneck of a naive prototype. Layout
(Linux kernel/bpf/ringbuf.c, include/uapi/linux/bpf.h): page 0 holds the consumer position
(read-write), page 1 the producer position, then the data area, mapped twice in a row so a record
that wraps around is contiguous. Each record starts with an 8-byte header
`struct bpf_ringbuf_hdr { u32 len; u32 pg_off; }` whose len carries BUSY (bit 31, not yet
committed) and DISCARD (bit 30) flags; records are 8-byte aligned.

Errors: `ProbeError` when bcc is missing, the probes do not compile or load, or a binary lacks
the symbols the primary hooks need.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from agent.events import BACKEND_JOINED, STAT_NAMES

PROBES_DIR = Path(__file__).resolve().parent.parent / "probes"
SECURE_RW_SYMBOLS = ("secure_read", "secure_write")

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_BUSY_BIT = 1 << 31
_DISCARD_BIT = 1 << 30
_HDR_SIZE = 8


class ProbeError(RuntimeError):
    """The probes could not be compiled, loaded or attached; the message says which and why."""


class RingReader:
    """Zero-copy consumer of one BPF_MAP_TYPE_RINGBUF map.

    Iterate `records()` to get `(offset, length)` of each committed record inside `data` (a
    memoryview of the mapped data area), then call `commit()` to hand the space back to the
    kernel. Record bytes stay valid until `commit()`.
    """

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ProbeError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        self.map_fd = map_fd
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=page)
        self.data = memoryview(self._producer)[page:]
        self._mask = size - 1
        self._pos = _U64.unpack_from(self._consumer, 0)[0]

    def records(self) -> Iterator[tuple[int, int]]:
        """Committed records from the consumer position up to the producer position."""
        data, mask, pos = self.data, self._mask, self._pos
        end = _U64.unpack_from(self._producer, 0)[0]
        unpack = _U32.unpack_from
        while pos < end:
            off = pos & mask
            length = unpack(data, off)[0]
            if length & _BUSY_BIT:  # reserved, not yet submitted: stop here, retry later
                break
            pos += (((length & ~_DISCARD_BIT) + _HDR_SIZE) + 7) & ~7
            if not length & _DISCARD_BIT:
                yield off + _HDR_SIZE, length
            self._pos = pos

    def commit(self) -> None:
        """Release everything `records()` has yielded to the kernel."""
        _U64.pack_into(self._consumer, 0, self._pos)

    def pending_bytes(self) -> int:
        return int(_U64.unpack_from(self._producer, 0)[0] - self._pos)

    def close(self) -> None:
        self.data.release()
        self._producer.close()
        self._consumer.close()


class Probes:
    """The loaded probe programs of one agent.

    mode: "secure_rw" (uprobes on secure_read/secure_write; plaintext above TLS) or "syscall"
    (recvfrom/sendto tracepoints of backends; TLS sessions then show as encrypted).
    data_ring_pages: size of the data ring in 4 KiB pages (power of two).
    """

    def __init__(self, mode: str = "secure_rw", data_ring_pages: int = 16384) -> None:
        if mode not in ("secure_rw", "syscall"):
            raise ValueError(f"unknown capture mode {mode!r}")
        self.mode = mode
        self.data_ring_pages = data_ring_pages
        self.attached: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> binary path
        self._bpf = None
        self._joined_watch = False
        self.data_ring: RingReader
        self.ctl_ring: RingReader

    # -- loading -----------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._bpf is not None

    def load(self) -> None:
        try:
            from bcc import BPF
        except ImportError as e:
            raise ProbeError(f"bcc is not importable ({e}); install Debian's python3-bpfcc "
                             "(make setup links it into the virtual environment)") from None
        files = ["pgwarden.c", "lifecycle.c", "clients.c"]
        files += ["secure_rw.c", "joined.c"] if self.mode == "secure_rw" else ["syscall_rw.c"]
        text = "\n".join((PROBES_DIR / f).read_text() for f in files)
        try:
            self._bpf = BPF(text=text, cflags=[f"-I{PROBES_DIR}",
                                               f"-DDATA_RING_PAGES={self.data_ring_pages}"])
        except Exception as e:  # bcc raises bare Exception on compile/load failure
            raise ProbeError(f"loading probes failed: {e} (is this root, with kernel headers "
                             "under /lib/modules/$(uname -r)? see scripts/setup.sh)") from None
        if self.mode == "secure_rw":  # joined.c runs only while a joined backend needs it
            self._joined_watch = True
            self.watch_joined(False)
        page = mmap.PAGESIZE
        self.data_ring = RingReader(self._bpf["data_events"].map_fd, self.data_ring_pages * page)
        self.ctl_ring = RingReader(self._bpf["ctl_events"].map_fd, 1024 * page)

    @staticmethod
    def has_secure_rw(binary: str) -> bool:
        """True if `binary` exports secure_read and secure_write (dynamic symbol table)."""
        from bcc import BPF

        try:
            return all(BPF.get_user_addresses(binary, f"^{s}$") for s in SECURE_RW_SYMBOLS)
        except Exception:
            return False

    def attach_binary(self, binary: str) -> bool:
        """Attach the secure_rw hooks to a postgres binary once per inode. True if newly attached."""
        if self.mode != "secure_rw" or self._bpf is None:
            return False
        st = os.stat(binary)
        key = (st.st_dev, st.st_ino)
        if key in self.attached:
            return False
        if not self.has_secure_rw(binary):
            raise ProbeError(f"{binary} does not export {' and '.join(SECURE_RW_SYMBOLS)}; "
                             "use --mode syscall")
        for sym in ("read", "write"):
            self._bpf.attach_uprobe(name=binary, sym=f"secure_{sym}",
                                    fn_name=f"uprobe_secure_{sym}_enter")
            self._bpf.attach_uretprobe(name=binary, sym=f"secure_{sym}",
                                       fn_name=f"uretprobe_secure_{sym}_exit")
        self.attached[key] = binary
        return True

    def watch_joined(self, on: bool) -> None:
        """Attach (on) or detach joined.c's recvfrom tracepoints (secure_rw mode)."""
        if self.mode != "secure_rw" or on == self._joined_watch:
            return
        for event in ("sys_enter_recvfrom", "sys_exit_recvfrom"):
            tp, fn = f"syscalls:{event}", f"tracepoint__syscalls__{event}"
            if on:
                self._bpf.attach_tracepoint(tp=tp, fn_name=fn)  # type: ignore[union-attr]
            else:
                self._bpf.detach_tracepoint(tp=tp)  # type: ignore[union-attr]
        self._joined_watch = on

    def joined_backends(self) -> int:
        """Backends still flagged BACKEND_JOINED (their first read not seen yet)."""
        table = self._bpf["backends"]  # type: ignore[index]
        return sum(1 for v in table.values() if v.flags & BACKEND_JOINED)

    # -- maps user space owns ----------------------------------------------------------------

    def add_postmaster(self, pid: int) -> None:
        table = self._bpf["postmasters"]  # type: ignore[index]
        table[table.Key(pid)] = table.Leaf(1)

    def remove_postmaster(self, pid: int) -> None:
        table = self._bpf["postmasters"]  # type: ignore[index]
        try:
            del table[table.Key(pid)]
        except KeyError:
            pass

    def add_backend(self, pid: int, gen: int, fd: int) -> None:
        """Track a backend that was already running (positions start at 0 now)."""
        table = self._bpf["backends"]  # type: ignore[index]
        leaf = table.Leaf()
        leaf.gen = gen
        leaf.fd = fd
        leaf.flags = BACKEND_JOINED
        table[table.Key(pid)] = leaf

    def backend_pids(self) -> set[int]:
        return {k.value for k in self._bpf["backends"].keys()}  # type: ignore[index]

    def set_ports(self, ports: Iterable[int]) -> None:
        """The TCP ports PostgreSQL listens on (client-side connect tracking filters on them)."""
        table = self._bpf["pg_ports"]  # type: ignore[index]
        wanted = set(ports)
        for key in list(table.keys()):
            if key.value not in wanted:
                del table[key]
        for port in wanted:
            table[table.Key(port)] = table.Leaf(1)

    def stats(self) -> dict[str, int]:
        """Kernel counters summed over CPUs (names: agent.events.STAT_NAMES)."""
        table = self._bpf["stats"]  # type: ignore[index]
        return {name: int(sum(table[ctypes.c_int(i)])) for i, name in enumerate(STAT_NAMES)}

    def close(self) -> None:
        if self._bpf is not None:
            self.data_ring.close()
            self.ctl_ring.close()
            self._bpf.cleanup()
            self._bpf = None

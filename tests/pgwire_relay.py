"""Test harness only: a loopback TCP relay that records the exact bytes of each direction
between real clients and a real PostgreSQL server, and helpers to replay recordings into
`agent.pgwire.session.Connection`.

pgwarden itself never proxies traffic (it captures inside the server with eBPF). The relay exists
so the decoder can be tested on byte streams produced by unchanged clients (psql, pgbench,
psycopg) and a real server, with the chunk boundaries as the relay read them. Recording order
is causal: a client chunk is recorded before it is forwarded, so the server's answer to it is
always recorded after it, as a capture inside the backend would see it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.pgwire.session import BACKEND, FRONTEND, Connection

Chunk = tuple[int, bytes]


@dataclass
class Recording:
    """One relayed connection: its chunks in the order the relay read them."""

    chunks: list[Chunk] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, direction: int, data: bytes) -> None:
        with self._lock:
            self.chunks.append((direction, data))

    def stream(self, direction: int) -> bytes:
        return b"".join(c for d, c in self.chunks if d == direction)


class Relay:
    """Accepts on 127.0.0.1:<port>, connects each client to upstream, records both ways."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self.recordings: list[Recording] = []
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop = True
        for s in [self._listener, *self._sockets]:
            try:
                s.close()
            except OSError:
                pass

    def wait_closed(self, count: int | None = None, timeout: float = 30.0) -> list[Recording]:
        """Wait until `count` (default: all so far) recorded connections are closed."""
        deadline = time.monotonic() + timeout
        while True:
            recs = list(self.recordings)
            if count is None or len(recs) >= count:
                pending = [r for r in recs if not r.closed.is_set()]
                if not pending:
                    return recs
                pending[0].closed.wait(max(0.0, deadline - time.monotonic()))
            else:
                time.sleep(0.02)
            if time.monotonic() > deadline:
                raise TimeoutError(f"relay: {len(recs)} connection(s), still open after {timeout}s")

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, server]
            rec = Recording()
            self.recordings.append(rec)
            done = [0]
            lock = threading.Lock()

            def finished(rec: Recording = rec, done: list[int] = done,
                         lock: threading.Lock = lock) -> None:
                with lock:
                    done[0] += 1
                    if done[0] == 2:
                        rec.closed.set()

            for src, dst, direction in ((client, server, FRONTEND), (server, client, BACKEND)):
                t = threading.Thread(target=self._pump, args=(src, dst, direction, rec, finished),
                                     daemon=True)
                t.start()
                self._threads.append(t)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, direction: int, rec: Recording,
              finished: Any) -> None:
        try:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                rec.add(direction, data)  # before forwarding: keeps the order causal
                try:
                    dst.sendall(data)
                except OSError:
                    break
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            finished()


# -- replay -----------------------------------------------------------------------------------


def replay(chunks: Iterable[Chunk], *, close: bool = True, conn: Connection | None = None,
           **conn_kwargs: Any) -> list[Any]:
    """Feed chunks (exact positions, ts = 1, 2, 3...) into a Connection; return its records."""
    conn = conn if conn is not None else Connection(**conn_kwargs)
    pos = [0, 0]
    ts = 0
    for direction, data in chunks:
        ts += 1
        conn.feed(direction, pos[direction], data, ts)
        pos[direction] += len(data)
    if close:
        conn.close(ts + 1)
    return conn.take_records()


def rechunk(chunks: Sequence[Chunk], cut: int) -> list[Chunk]:
    """Every chunk longer than `cut` split in two at offset `cut` (order kept)."""
    out: list[Chunk] = []
    for d, c in chunks:
        if 0 < cut < len(c):
            out += [(d, c[:cut]), (d, c[cut:])]
        else:
            out.append((d, c))
    return out


def bytewise(chunks: Sequence[Chunk]) -> list[Chunk]:
    """Every chunk fed one byte at a time."""
    return [(d, c[i:i + 1]) for d, c in chunks for i in range(len(c))]


def merged(chunks: Sequence[Chunk]) -> list[Chunk]:
    """Consecutive chunks of the same direction merged (many messages per read)."""
    out: list[Chunk] = []
    for d, c in chunks:
        if out and out[-1][0] == d:
            out[-1] = (d, out[-1][1] + c)
        else:
            out.append((d, c))
    return out


def statements(records: Iterable[Any]) -> list[Any]:
    from agent.pgwire.records import Statement

    return [r for r in records if isinstance(r, Statement)]


def comparable(records: Iterable[Any]) -> list[Any]:
    """Records with timestamps removed (different chunkings give different timestamps)."""
    from dataclasses import fields, replace

    out = []
    for r in records:
        names = {f.name for f in fields(r)}
        kw = {n: None for n in ("ts_ns", "ts_start_ns", "ts_end_ns") if n in names}
        out.append(replace(r, **kw))
    return out

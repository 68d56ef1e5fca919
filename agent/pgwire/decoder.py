"""Framing of the PostgreSQL protocol, per direction: message length bounds, resynchronisation
after lost or malformed bytes, and a small streaming decoder that yields message dataclasses.

Every message after the startup packet is Byte1 type, Int32 length (counting itself, not the
type byte), body (protocol-message-formats). A captured stream can start in the middle of a
message (agent attached to a running backend) or lose bytes (kernel drops), so the decoder must
find message boundaries again without trusting any single byte:

- Every type byte has a length range (`FRONTEND_MIN/MAX`, `BACKEND_MIN/MAX`). Fixed-size
  messages have exact lengths (ReadyForQuery 5, Sync 4, ...); the server itself refuses client
  messages longer than 10000 bytes except Query, Parse, Bind, FunctionCall, CopyData (1 GiB) and
  authentication messages (65535) (postgres.c SocketBackend, PQ_SMALL_MESSAGE_LIMIT).
- Backend side: resynchronise on ReadyForQuery `Z 00 00 00 05 [ITE]` (`find_ready_for_query`),
  or at a chunk that is a complete chain of valid backend messages ending with ReadyForQuery
  (`backend_chain_ends_ready`).
- Frontend side: resynchronise at the start of a chunk (a read by the backend; clients flush at
  message boundaries) that is a chain of strictly valid frontend messages (`frontend_chain`).

`session.Connection` uses these pieces with its own inlined message loop (the hot path);
`StreamDecoder` is the simple, message-object API for tools and tests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from agent.pgwire.codes import BackendType, FrontendType
from agent.pgwire.messages import (
    BackendMessage,
    FrontendMessage,
    GSSENCRequest,
    ProtocolError,
    SSLRequest,
    StartupPacket,
    parse_backend,
    parse_frontend,
    parse_startup,
)

INT32 = struct.Struct(">i")
INT16 = struct.Struct(">h")
HEADER = struct.Struct(">Bi")  # type byte, length

GIB = 1 << 30
SMALL = 10000  # PQ_SMALL_MESSAGE_LIMIT: the server rejects longer "small" client messages
AUTH_MAX = 65535 + 4  # PG_MAX_AUTH_TOKEN_LENGTH
STARTUP_MAX = 10000  # MAX_STARTUP_PACKET_LENGTH
STARTUP_MIN = 8

# Memory bounds. A message longer than MESSAGE_CAP is handled from its first MESSAGE_CAP bytes
# (the rest skipped, the statement flagged truncated), so a direction never buffers much more.
MESSAGE_CAP = 1 << 20


def _table(ranges: dict[int, tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lo = [GIB + 1] * 256  # unknown type bytes: no length is valid
    hi = [-1] * 256
    for t, (a, b) in ranges.items():
        lo[t], hi[t] = a, b
    return tuple(lo), tuple(hi)


F = FrontendType
FRONTEND_MIN, FRONTEND_MAX = _table({
    F.Query: (5, GIB),  # at least the NUL
    F.Parse: (4 + 1 + 1 + 2, GIB),
    F.Bind: (4 + 1 + 1 + 2 + 2 + 2, GIB),
    F.Describe: (4 + 1 + 1, SMALL),
    F.Close: (4 + 1 + 1, SMALL),
    F.Execute: (4 + 1 + 4, SMALL),
    F.Sync: (4, 4),
    F.Flush: (4, 4),
    F.Terminate: (4, 4),
    F.CopyData: (4, GIB),
    F.CopyDone: (4, 4),
    F.CopyFail: (5, SMALL),
    F.FunctionCall: (4 + 4 + 2 + 2 + 2, GIB),
    F.PasswordMessage: (4, AUTH_MAX),
})

B = BackendType
BACKEND_MIN, BACKEND_MAX = _table({
    B.Authentication: (8, 1 << 20),
    B.BackendKeyData: (12, 4 + 4 + 256),
    B.BindComplete: (4, 4),
    B.CloseComplete: (4, 4),
    B.ParseComplete: (4, 4),
    B.NoData: (4, 4),
    B.EmptyQueryResponse: (4, 4),
    B.PortalSuspended: (4, 4),
    B.CopyDone: (4, 4),
    B.ReadyForQuery: (5, 5),
    B.CommandComplete: (5, 4096),
    B.CopyInResponse: (7, 7 + 2 * 32767),
    B.CopyOutResponse: (7, 7 + 2 * 32767),
    B.CopyBothResponse: (7, 7 + 2 * 32767),
    B.CopyData: (4, GIB),
    B.DataRow: (6, GIB),
    B.ErrorResponse: (5, GIB),
    B.NoticeResponse: (5, GIB),
    B.FunctionCallResponse: (8, GIB),
    B.NegotiateProtocolVersion: (12, 1 << 20),
    B.NotificationResponse: (10, GIB),
    B.ParameterDescription: (6, 6 + 4 * 65535),
    B.ParameterStatus: (6, 1 << 20),
    B.RowDescription: (6, 4 << 20),
})
del F, B

# Types whose body the decoder never needs: counted, then skipped by length without buffering.
SKIP_BODY_FRONTEND = frozenset({FrontendType.CopyData})
SKIP_BODY_BACKEND = frozenset({BackendType.DataRow, BackendType.CopyData})

READY_PREFIX = b"Z\x00\x00\x00\x05"
READY_STATUS = frozenset(b"ITE")


def find_ready_for_query(b: bytes | bytearray, start: int, end: int) -> int:
    """Offset of the first complete ReadyForQuery `Z 00 00 00 05 [ITE]` in b[start:end], or -1.

    A ReadyForQuery whose status byte is not yet there is not reported; the caller keeps the
    last 5 bytes for the next chunk."""
    i = b.find(READY_PREFIX, start, end)
    while i >= 0:
        if i + 5 >= end:
            return -1
        if b[i + 5] in READY_STATUS:
            return i
        i = b.find(READY_PREFIX, i + 1, end)
    return -1


def _cstring_end(b: bytes | bytearray, s: int, e: int) -> int:
    nul = b.find(b"\0", s, e)
    return -1 if nul < 0 else nul + 1


def frontend_body_valid(t: int, b: bytes | bytearray, s: int, e: int) -> bool:
    """Strict check of one complete frontend message body b[s:e] (used to accept a resync
    point: every field must be where the layout says and the body must end exactly)."""
    try:
        if t == FrontendType.Query:
            return b.find(b"\0", s, e) == e - 1
        if t == FrontendType.Parse:
            p = _cstring_end(b, s, e)
            p = _cstring_end(b, p, e) if p > 0 else -1
            if p < 0 or p + 2 > e:
                return False
            n: int = INT16.unpack_from(b, p)[0]
            return n >= 0 and p + 2 + 4 * n == e
        if t == FrontendType.Bind:
            p = _cstring_end(b, s, e)
            p = _cstring_end(b, p, e) if p > 0 else -1
            if p < 0 or p + 2 > e:
                return False
            nf = INT16.unpack_from(b, p)[0]
            p += 2 + 2 * nf
            if nf < 0 or p + 2 > e:
                return False
            n = INT16.unpack_from(b, p)[0]
            p += 2
            if n < 0 or nf not in (0, 1, n):
                return False
            for _ in range(n):
                if p + 4 > e:
                    return False
                ln = INT32.unpack_from(b, p)[0]
                if ln < -1:
                    return False
                p += 4 + max(ln, 0)
            if p + 2 > e:
                return False
            nr: int = INT16.unpack_from(b, p)[0]
            return nr >= 0 and p + 2 + 2 * nr == e
        if t == FrontendType.Describe or t == FrontendType.Close:
            return b[s] in (0x53, 0x50) and b.find(b"\0", s + 1, e) == e - 1
        if t == FrontendType.Execute:
            return b.find(b"\0", s, e) == e - 5 and INT32.unpack_from(b, e - 4)[0] >= 0
        if t == FrontendType.CopyFail:
            return b.find(b"\0", s, e) == e - 1
        if t == FrontendType.FunctionCall:
            p = s + 4
            nf = INT16.unpack_from(b, p)[0]
            p += 2 + 2 * nf
            if nf < 0 or p + 2 > e:
                return False
            n = INT16.unpack_from(b, p)[0]
            p += 2
            if n < 0 or nf not in (0, 1, n):
                return False
            for _ in range(n):
                if p + 4 > e:
                    return False
                ln = INT32.unpack_from(b, p)[0]
                if ln < -1:
                    return False
                p += 4 + max(ln, 0)
            return bool(p + 2 == e)
        # Sync, Flush, Terminate, CopyDone (exact lengths already checked), CopyData.
        return t != FrontendType.PasswordMessage
    except (struct.error, IndexError):
        return False


def frontend_chain(b: bytes | bytearray, start: int, end: int) -> bool:
    """True when b[start:end] is a plausible resync point on the frontend side: a chain of
    strictly valid frontend messages that ends exactly at `end`, or one of at least two valid
    messages followed by the valid header of an incomplete last message (a large client write
    that the backend reads in pieces)."""
    off = start
    count = 0
    lo, hi = FRONTEND_MIN, FRONTEND_MAX
    while off < end:
        if off + 5 > end:
            return False
        t, ln = HEADER.unpack_from(b, off)
        if ln < lo[t] or ln > hi[t]:
            return False
        mend = off + 1 + ln
        if mend > end:
            return count >= 2
        if not frontend_body_valid(t, b, off + 5, mend):
            return False
        count += 1
        off = mend
    return count > 0


def backend_chain_ends_ready(b: bytes | bytearray, start: int, end: int) -> bool:
    """True when b[start:end] is a chain of valid backend messages that ends exactly at `end`
    with a ReadyForQuery (a whole response flushed by the server)."""
    off = start
    lo, hi = BACKEND_MIN, BACKEND_MAX
    last = -1
    while off < end:
        if off + 5 > end:
            return False
        t, ln = HEADER.unpack_from(b, off)
        if ln < lo[t] or ln > hi[t]:
            return False
        off += 1 + ln
        last = t
    return off == end and last == BackendType.ReadyForQuery and b[end - 1] in READY_STATUS


class StreamDecoder:
    """Message-object decoder for one direction of one connection: `feed(data)` returns the
    messages completed by `data`. Raises ProtocolError on malformed input (it does not
    resynchronise: that is `session.Connection`'s job). Frontend streams start with a startup
    packet; after an SSLRequest/GSSENCRequest the next packet is again a startup packet."""

    def __init__(self, frontend: bool, *, startup: bool = True, encoding: str = "utf-8") -> None:
        self.frontend = frontend
        self.in_startup = frontend and startup
        self.encoding = encoding
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[StartupPacket | FrontendMessage | BackendMessage]:
        self._buf += data
        return list(self._drain())

    def _drain(self) -> Iterator[StartupPacket | FrontendMessage | BackendMessage]:
        buf = self._buf
        off = 0
        lo, hi = (FRONTEND_MIN, FRONTEND_MAX) if self.frontend else (BACKEND_MIN, BACKEND_MAX)
        try:
            while True:
                if self.in_startup:
                    if len(buf) - off < 4:
                        return
                    ln = INT32.unpack_from(buf, off)[0]
                    if not STARTUP_MIN <= ln <= STARTUP_MAX:
                        raise ProtocolError(f"startup packet length {ln}")
                    if len(buf) - off < ln:
                        return
                    msg: StartupPacket | FrontendMessage | BackendMessage
                    msg = parse_startup(bytes(buf[off + 4:off + ln]))
                    off += ln
                    # After SSLRequest/GSSENCRequest (answered by one unframed byte) the next
                    # plaintext packet is again a startup packet.
                    self.in_startup = isinstance(msg, (SSLRequest, GSSENCRequest))
                    yield msg
                    continue
                if len(buf) - off < 5:
                    return
                t, ln = HEADER.unpack_from(buf, off)
                if ln < lo[t] or ln > hi[t]:
                    raise ProtocolError(f"message type {t!r} with length {ln}")
                if len(buf) - off < 1 + ln:
                    return
                body = bytes(buf[off + 5:off + 1 + ln])
                off += 1 + ln
                if self.frontend:
                    yield parse_frontend(t, body, encoding=self.encoding, with_values=True)
                else:
                    yield parse_backend(t, body, encoding=self.encoding)
        finally:
            del buf[:off]


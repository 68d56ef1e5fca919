"""Per-connection PostgreSQL protocol decoder (sans-I/O): bytes in, records out.

    conn = Connection(capture_params=False, mid_session=False, tls_visible=True)
    conn.feed(FRONTEND, pos, data, ts_ns)      # what the backend read, at stream offset pos
    conn.feed(BACKEND, pos, data, ts_ns)       # what the backend wrote
    conn.close(ts_ns)                          # the backend exited
    for record in conn.take_records(): ...     # StartupInfo, Statement, Gap, SessionEnd, ...

Design (reference/ebpf-capture.md sections (e), (g), 11):

- Framing per direction with exact stream positions: a position jump is a Gap("dropped"). A
  gap inside a DataRow/CopyData body being skipped costs nothing; a gap inside a buffered
  message whose length is known truncates that message only; any other gap, or a malformed
  header, enters resync mode. The backend side resynchronises at a chunk that is a whole chain
  of messages ending with ReadyForQuery, or on the ReadyForQuery pattern `Z 00 00 00 05 [ITE]`;
  the frontend side at a chunk that is a chain of strictly valid messages (decoder.py).
- Responses are matched to requests strictly in order through a FIFO of pending operations
  (Query, Parse, Bind, Describe, Execute, Close, Sync, FunctionCall). ReadyForQuery closes a
  group (a Query or a Sync-terminated batch) and gives the transaction status, so Statement
  records are emitted then. After an ErrorResponse in an extended batch the server skips to
  Sync: the rest of the batch is SKIPPED; in a multi-statement Query the later statements are.
- Statement and portal maps follow the server's: they are updated when the client sends
  Parse/Bind/Close (so pipelined batches resolve), and rolled back when the server refuses or
  skips the message. SQL PREPARE / DEALLOCATE / DISCARD ALL are applied from their command tags.
- Ordering assumption: frontend and backend chunks are fed in the order the backend process
  read and wrote them (one ring buffer per host keeps it). Then, when a response arrives, the
  FIFO holds exactly what the backend had read; and since a backend reads only when its input
  is exhausted and flushes at ReadyForQuery, when a frontend chunk arrives every group read
  before it has been answered. After capture loss this causal order heals the FIFO: groups
  older than the newest request are closed (truncated) instead of being given responses that
  are not theirs, an answer for which no request is pending shows the frontend framing is
  wrong (resync there), and a backend still "inside a message" when a new request arrives
  after a resync is resynchronised. Statements are flagged, never silently dropped; a
  response whose request was lost is reported as protocol "unknown" with text None.

Hot path (pgbench select-only: one Query chunk, one T/D/C/Z chunk, ~50k/s): a chunk made of
complete messages is parsed straight from the caller's bytes (no buffer copy), type bytes are
ints, DataRow is counted without any object, handlers come from per-type tables, and the only
allocations per statement are its Statement record and one op.

Never raises from feed()/close()/take_records(): an internal error puts the direction into
resync mode and is reported as Gap("desync"); `decode_errors` counts them.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from pglast import parser as _pglast

from agent.pgwire.codes import StartupCode
from agent.pgwire.decoder import (
    BACKEND_MAX,
    BACKEND_MIN,
    FRONTEND_MAX,
    FRONTEND_MIN,
    GIB,
    HEADER,
    INT16,
    INT32,
    MESSAGE_CAP,
    STARTUP_MAX,
    backend_chain_ends_ready,
    find_ready_for_query,
    frontend_chain,
)
from agent.pgwire.messages import (
    ROW_COUNT_COMMANDS,
    ProtocolError,
    parse_notice_fields,
    parse_startup_parameters,
)
from agent.pgwire.records import (
    BACKEND,
    FRONTEND,
    INCOMPLETE,
    SKIPPED,
    TRUNCATED,
    UNKNOWN_STATEMENT,
    Authenticated,
    CancelInfo,
    Gap,
    Record,
    SessionEnd,
    StartupInfo,
    Statement,
    flag_names,
)

__all__ = [
    "BACKEND", "FRONTEND", "INCOMPLETE", "SKIPPED", "TRUNCATED", "UNKNOWN_STATEMENT",
    "Authenticated", "CancelInfo", "Connection", "Gap", "Record", "SessionEnd", "StartupInfo",
    "Statement", "flag_names", "split_statements",
]

# Stream modes.
NORMAL, STARTUP, DESYNC, RAW1, ENCRYPTED, DONE = range(6)

# Pending operation kinds (first item of each op).
OP_QUERY, OP_PARSE, OP_BIND, OP_DESCRIBE, OP_EXECUTE, OP_CLOSE, OP_SYNC, OP_FCALL = range(8)
_TERMINATORS = (OP_QUERY, OP_SYNC, OP_FCALL)  # answered by ReadyForQuery
# Query op (a list): [OP_QUERY, statements, text, opno, answered, failed, mismatch]
Q_STMTS, Q_TEXT, Q_OPNO, Q_IDX, Q_FAILED, Q_MISMATCH = 1, 2, 3, 4, 5, 6

_FIRST_RESPONSE = {OP_PARSE: 49, OP_BIND: 50, OP_CLOSE: 51, OP_SYNC: 90, OP_FCALL: 86}
_FIRST_EXECUTE = frozenset(b"CIsGHW")  # not DataRow: rows before it may have been lost
_FIRST_QUERY_RESPONSES = frozenset(b"TCIGHW")
_PHASES = {OP_PARSE: "parse", OP_BIND: "bind", OP_DESCRIBE: "describe", OP_CLOSE: "close"}
_STARTUP_HEAD = struct.Struct(">iI")
_STATUS = {73: "I", 84: "T", 69: "E"}

# Bounds on per-connection state.
MAX_PREPARED = 10000  # statement map / portal map entries kept (oldest evicted)
MAX_PREPARED_CHARS = 8 << 20  # and at most this much SQL text in the statement map
MAX_PENDING = 100000  # operations waiting for a response (oldest closed as truncated)
MAX_DONE = 10000  # answered statements waiting for their ReadyForQuery
MAX_PARAM_CHARS = 1024  # per captured bind value (capture_params=True only)
MAX_TAG_CACHE = 256  # distinct command tags remembered per connection

# Command-tag side effects on the statement map.
_TAG_DEALLOCATE, _TAG_DISCARD_ALL, _TAG_PREPARE = 1, 2, 3
_SPECIAL_TAGS = {"DEALLOCATE": _TAG_DEALLOCATE, "DEALLOCATE ALL": _TAG_DISCARD_ALL,
                 "DISCARD ALL": _TAG_DISCARD_ALL, "PREPARE": _TAG_PREPARE}
_IDENT = r'("(?:[^"]|"")+"|[^\s;(]+)'
_DEALLOCATE_RE = re.compile(r"^\s*deallocate\s+(?:prepare\s+)?" + _IDENT, re.I)
_PREPARE_RE = re.compile(r"^\s*prepare\s+" + _IDENT
                         + r"\s*(?:\((?:[^()]|\([^()]*\))*\))?\s*as\s+(.*?)\s*;?\s*$",
                         re.I | re.S)

# PostgreSQL client_encoding names -> Python codecs (others decode as UTF-8 with replacement).
_ENCODINGS = {
    "UTF8": "utf-8", "UNICODE": "utf-8", "SQL_ASCII": "utf-8", "LATIN1": "latin-1",
    "LATIN2": "iso8859-2", "LATIN3": "iso8859-3", "LATIN4": "iso8859-4", "LATIN5": "iso8859-9",
    "LATIN6": "iso8859-10", "LATIN7": "iso8859-13", "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15", "LATIN10": "iso8859-16", "ISO_8859_5": "iso8859-5",
    "ISO_8859_6": "iso8859-6", "ISO_8859_7": "iso8859-7", "ISO_8859_8": "iso8859-8",
    "WIN866": "cp866", "WIN874": "cp874", "WIN1250": "cp1250", "WIN1251": "cp1251",
    "WIN1252": "cp1252", "WIN1253": "cp1253", "WIN1254": "cp1254", "WIN1255": "cp1255",
    "WIN1256": "cp1256", "WIN1257": "cp1257", "WIN1258": "cp1258", "KOI8R": "koi8_r",
    "KOI8U": "koi8_u", "EUC_JP": "euc_jp", "EUC_JIS_2004": "euc_jis_2004", "EUC_KR": "euc_kr",
    "EUC_CN": "gb2312", "SJIS": "shift_jis", "SHIFT_JIS_2004": "shift_jis_2004", "GBK": "gbk",
    "GB18030": "gb18030", "BIG5": "big5", "UHC": "cp949", "JOHAB": "johab",
}


def _codec(pg_name: str) -> str:
    return _ENCODINGS.get(pg_name.upper().replace("-", "_"), "utf-8")


def split_statements(sql: str) -> tuple[str, ...]:
    """The statements of a multi-statement Query string, split by PostgreSQL's own parser
    (libpg_query via pglast), whitespace-stripped, without their ';'. One item (the whole
    text) when it does not parse: the server then refuses the whole string with one error."""
    return _split_cached(sql) if len(sql) <= 8192 else _split(sql)


@lru_cache(maxsize=1024)
def _split_cached(sql: str) -> tuple[str, ...]:
    return _split(sql)


def _split(sql: str) -> tuple[str, ...]:
    try:
        parts = tuple(_pglast.split(sql))
    except Exception:  # pglast.parser.ParseError, or anything libpg_query raises
        return (sql,)
    return parts if parts else (sql,)


def _drop_oldest(d: dict[str, Any], n: int) -> None:
    """Delete the n oldest entries at once (deleting the first key one by one rescans the
    dict's deleted slots each time: quadratic)."""
    for key in [k for k, _ in zip(d, range(n), strict=False)]:
        del d[key]


def _request_ts(op: Any) -> Any:
    """The frontend chunk timestamp of a terminator op (Query, Sync, FunctionCall)."""
    k = op[0]
    if k == OP_SYNC:
        return op[1]
    if k == OP_QUERY:
        return op[1][0].ts_start_ns
    return op[1].ts_start_ns


def _one_statement(text: str) -> bool:
    """True for "SELECT ...;" (one ';', only whitespace after it): no need to split."""
    stripped = text.rstrip()
    return stripped.find(";") == len(stripped) - 1


def _ident(raw: str) -> str:
    if raw.startswith('"'):
        return raw[1:-1].replace('""', '"')
    return raw.lower()


class _Stream:
    """Framing state of one direction."""

    __slots__ = ("direction", "pos", "buf", "skip", "mode", "lost", "resync_flag")

    def __init__(self, direction: int, mode: int) -> None:
        self.direction = direction
        self.pos = 0  # next expected stream offset
        self.buf = bytearray()  # an incomplete message (or, in DESYNC, the scan carry)
        self.skip = 0  # body bytes still to discard (DataRow/CopyData, capped messages)
        self.mode = mode
        self.lost = 0  # bytes skipped in this desync episode (reported as Gap "desync")
        self.resync_flag = 0  # TRUNCATED when the desync came from a gap


_ErrInfo = tuple[str | None, str | None, str | None, str | None, str | None, str | None]


def _set_error(st: Statement, e: _ErrInfo) -> None:
    st.sqlstate, st.error_message, st.error_severity, st.error_constraint, st.error_schema, \
        st.error_table = e


class Connection:
    """Decoder of one PostgreSQL connection (one backend process). See the module docstring.

    capture_params: keep bind parameter values (text as str, binary as hex) in Statement.
    mid_session: the capture started on a running session: both directions begin by
      resynchronising, a Gap("mid_session") is reported, and Bind/Execute of statements
      prepared before are reported with UNKNOWN_STATEMENT and text None.
    tls_visible: the capture sits above TLS (secure_read/secure_write uprobes): after an
      SSLRequest the plaintext continues. With False (recvfrom/sendto capture) the server's
      one-byte answer is in the backend stream, and after 'S' both directions are ciphertext.
    split: how a multi-statement Query string is split (default `split_statements`).
    """

    __slots__ = (
        "capture_params", "mid_session", "tls_visible", "backend_pid", "params",
        "server_params", "negotiated_version", "decode_errors", "desyncs",
        "_split", "_fe", "_be", "_records", "_pending", "_done", "_stmts", "_portals",
        "_rows", "_qseq", "_batch_open", "_opno", "_seq", "_batch_error", "_tags", "_enc",
        "_trunc", "_tls", "_gss", "_cancel", "_terminated", "_ended", "_copy_in_ext",
        "_mid_gap", "_encrypted", "_suspect", "_copy_active", "_stmt_chars",
    )

    def __init__(self, capture_params: bool = False, mid_session: bool = False,
                 tls_visible: bool = True,
                 split: Callable[[str], Sequence[str]] | None = None) -> None:
        self.capture_params = capture_params
        self.mid_session = mid_session
        self.tls_visible = tls_visible
        self.backend_pid: int | None = None
        self.params: dict[str, str] = {}  # StartupMessage parameters
        self.server_params: dict[str, str] = {}  # latest ParameterStatus values
        self.negotiated_version: int | None = None
        self.decode_errors = 0  # internal errors survived (each reported as a desync Gap)
        self.desyncs = 0
        self._split = split or split_statements
        self._fe = _Stream(FRONTEND, DESYNC if mid_session else STARTUP)
        self._be = _Stream(BACKEND, DESYNC if mid_session else NORMAL)
        self._records: list[Any] = []
        self._pending: deque[Any] = deque()
        self._done: list[Statement] = []
        self._stmts: dict[str, tuple[str, str | None, int, int]] = {}
        self._portals: dict[str, tuple[Any, ...]] = {}
        self._rows = 0  # DataRows since the last completion
        self._qseq = 0
        self._batch_open = False
        self._opno = 0
        self._seq = 0
        self._batch_error: _ErrInfo | None = None
        self._tags: dict[bytes, tuple[str, int | None, int]] = {}
        self._enc = "utf-8"
        self._trunc = False  # the message being handled is a prefix (cap or gap)
        self._tls = False
        self._gss = False
        self._cancel = False
        self._terminated = False
        self._ended = False
        self._copy_in_ext = False
        self._mid_gap = mid_session
        self._encrypted = False
        self._suspect = False  # after a frontend resync: unanswered groups are stale
        self._copy_active = False  # COPY IN/BOTH: the backend reads while a group is pending
        self._stmt_chars = 0  # SQL text added to the statement map since the last recount

    # -- public API ----------------------------------------------------------------------------

    def feed(self, direction: int, pos: int, data: bytes | bytearray | memoryview,
             ts_ns: int) -> None:
        """Decode `data`, the bytes at stream offset `pos` of `direction` (FRONTEND/BACKEND)."""
        try:
            st = self._be if direction == BACKEND else self._fe
            n = len(data)
            if not n:
                return
            exp = st.pos
            if pos != exp and pos < exp:  # overlap: bytes already seen
                cut = exp - pos
                if cut >= n:
                    return
                data = data[cut:]
                n -= cut
                pos = exp
            if self._suspect and direction != BACKEND:
                self._close_stale_groups()
            if pos != exp:
                st.pos = pos + n
                self._gap(st, pos - exp, ts_ns)
            st.pos = pos + n
            if type(data) is not bytes:
                data = bytes(data)
            if st.mode == NORMAL and not st.skip and not st.buf:
                # Fast path: parse straight from the chunk.
                if direction == BACKEND:
                    off = self._be_parse(data, 0, n, ts_ns)
                else:
                    off = self._fe_parse(data, 0, n, ts_ns)
                if off >= n:
                    return
                if st.mode == NORMAL:
                    st.buf += data[off:]
                    return
                self._slow(st, data[off:], ts_ns, False)
            else:
                self._slow(st, data, ts_ns, True)
        except Exception:
            self._internal_error(direction, data, ts_ns)

    def close(self, ts_ns: int) -> None:
        """The backend exited: flush pending operations as INCOMPLETE and end the session."""
        try:
            if self._mid_gap:
                self._mid_gap = False
                self._records.append(Gap(ts_ns, FRONTEND, 0, "mid_session"))
            if self._ended:
                return
            self._flush_all(INCOMPLETE)
            for st in (self._fe, self._be):
                if st.mode == DESYNC and st.lost + len(st.buf):
                    self._records.append(Gap(ts_ns, st.direction, st.lost + len(st.buf),
                                             "desync"))
                    st.lost = 0
                st.mode = DONE
                st.buf.clear()
            self._end(ts_ns, "terminate" if self._terminated else "disconnect", None, None)
        except Exception:
            self.decode_errors += 1
            self._ended = True

    def take_records(self) -> list[Any]:
        """Records produced since the last call, in order."""
        r = self._records
        self._records = []
        return r

    @property
    def statement_map(self) -> dict[str, str | None]:
        """Prepared statement name -> SQL text, as the decoder believes the server has them."""
        return {k: v[1] for k, v in self._stmts.items()}

    # -- framing -------------------------------------------------------------------------------

    def _slow(self, st: _Stream, data: bytes, ts: int, fresh: bool) -> None:
        """Everything but the fast path: buffered partial messages, skips, mode changes,
        resync. `fresh`: data starts at a chunk start (a resync candidate)."""
        if self._mid_gap:
            self._mid_gap = False
            self._records.append(Gap(ts, FRONTEND, 0, "mid_session"))
        backend = st.direction == BACKEND
        while data:
            mode = st.mode
            if mode == NORMAL or mode == STARTUP:
                if st.skip:
                    k = st.skip
                    if k >= len(data):
                        st.skip = k - len(data)
                        return
                    st.skip = 0
                    data = data[k:]
                    fresh = False
                if mode == STARTUP:
                    fn = self._fe_startup
                else:
                    fn = self._be_parse if backend else self._fe_parse
                buf = st.buf
                if buf:
                    buf += data
                    k = fn(buf, 0, len(buf), ts)
                    if st.mode == mode:
                        del buf[:k]
                        return
                    data = bytes(buf[k:])
                    buf.clear()
                else:
                    k = fn(data, 0, len(data), ts)
                    if st.mode == mode:
                        if k < len(data):
                            buf += data[k:]
                        return
                    data = data[k:]
                fresh = False
            elif mode == DESYNC:
                k = self._be_resync(st, data, ts, fresh) if backend else \
                    self._fe_resync(st, data, ts, fresh)
                if st.mode == DESYNC:
                    return
                data = data[k:]
                fresh = False
            elif mode == RAW1:
                answer = data[0]
                if answer == 0x53 or answer == 0x47:  # 'S' SSL / 'G' GSS accepted
                    self._go_encrypted(ts, BACKEND)
                    return
                st.mode = NORMAL
                if answer == 0x4E:  # 'N': refused, the client goes on in plaintext
                    data = data[1:]
            else:  # ENCRYPTED, DONE
                return

    def _gap(self, st: _Stream, hole: int, ts: int) -> None:
        """`hole` bytes of this direction were lost before the current chunk."""
        self._records.append(Gap(ts, st.direction, hole, "dropped"))
        mode = st.mode
        if mode == ENCRYPTED or mode == DONE:
            return
        if mode == DESYNC:
            st.buf.clear()  # the scan carry is no longer contiguous
            return
        if mode == NORMAL:
            if st.skip:
                if st.skip >= hole:  # inside a DataRow/CopyData body we skip anyway
                    st.skip -= hole
                    return
            elif len(st.buf) >= 5:
                buf = st.buf
                t, ln = HEADER.unpack_from(buf, 0)
                have = len(buf)
                if have + hole < 1 + ln and self._partial_ok(st, t):
                    # The hole ends inside this message: handle its prefix, skip the rest.
                    self._handle_partial(st, t, buf, 0, have, ts)
                    buf.clear()
                    st.skip = 1 + ln - have - hole
                    return
        self._enter_desync(st, TRUNCATED)

    def _partial_ok(self, st: _Stream, t: int) -> bool:
        if st.direction == BACKEND:
            return t in (68, 100, 69, 78, 84, 86, 65)  # D d E N T V A
        return t in (81, 80, 66, 70, 100)  # Q P B F d

    def _handle_partial(self, st: _Stream, t: int, b: bytes | bytearray, off: int, end: int,
                        ts: int) -> None:
        """Handle the first bytes b[off:end] of a message that is longer (cap) or was cut (gap):
        handlers see `_trunc` and flag what they produce TRUNCATED."""
        self._trunc = True
        try:
            if st.direction == BACKEND:
                if t == 68:
                    self._rows += 1
                elif t != 100:
                    h = _BE_HANDLERS[t]
                    if h is not None:
                        h(self, b, off + 5, end, ts)
            elif t != 100:
                h = _FE_HANDLERS[t]
                if h is not None:
                    h(self, b, off + 5, end, ts)
        finally:
            self._trunc = False

    def _enter_desync(self, st: _Stream, flag: int, keep_buf: bool = False) -> None:
        st.mode = DESYNC
        if not keep_buf:
            st.buf.clear()
        st.skip = 0
        st.resync_flag = flag
        self.desyncs += 1
        # Until a group completes cleanly again, a new frontend chunk closes groups still
        # pending: the server answered them before reading it (see _close_stale_groups).
        self._suspect = True
        if st.direction == BACKEND and flag:
            self._flag_head(TRUNCATED)

    def _resynced(self, st: _Stream, ts: int) -> None:
        if st.lost:
            self._records.append(Gap(ts, st.direction, st.lost, "desync"))
        st.lost = 0
        st.buf.clear()
        st.mode = NORMAL

    def _fe_resync(self, st: _Stream, data: bytes, ts: int, fresh: bool) -> int:
        if fresh and frontend_chain(data, 0, len(data)):
            self._resynced(st, ts)
            # By the ordering assumption every response to what the backend read before this
            # chunk has been fed: operations still pending lost their responses.
            self._flush_all(TRUNCATED)
            self._suspect = True
            return 0
        st.lost += len(data)
        return len(data)

    def _be_resync(self, st: _Stream, data: bytes, ts: int, fresh: bool) -> int:
        self._close_answered_groups()
        if (fresh and not st.buf and self._groups_pending() <= 1
                and backend_chain_ends_ready(data, 0, len(data))):
            # A whole response chain: it answers the (only) pending group. If it does not start
            # with that group's first response, its beginning was lost.
            self._resynced(st, ts)
            self._suspect = True
            if st.resync_flag and not self._starts_response(data[0]):
                self._flag_head(TRUNCATED)
            return 0
        carry = len(st.buf)
        b = bytes(st.buf) + data if carry else data
        i = find_ready_for_query(b, 0, len(b))
        if i < 0:
            st.lost += len(data)
            keep = b[-5:]
            st.buf[:] = keep
            st.lost -= len(keep) - carry  # the carry is counted when finally dropped
            return len(data)
        st.lost += i
        self._resynced(st, ts)
        self._suspect = True
        # Which group this ReadyForQuery ends is unknown when responses were lost: close every
        # pending operation as truncated rather than risk giving one the wrong result.
        pending = self._pending
        done = self._done
        while pending:
            self._close_op(pending.popleft(), TRUNCATED, done)
        self._batch_error = None
        self._ready(b[i + 5], ts)
        return i + 6 - carry

    def _starts_response(self, t: int) -> bool:
        """Can backend message type `t` be the first response to the head operation?"""
        pending = self._pending
        if not pending:
            return False
        k = pending[0][0]
        if t == 69 or t == 78 or t == 83 or t == 65:  # ErrorResponse, Notice, ParameterStatus...
            return True
        if k == OP_QUERY:
            return pending[0][Q_IDX] == 0 and t in _FIRST_QUERY_RESPONSES
        if k == OP_DESCRIBE:
            return t == 116 or t == 84 or t == 110  # ParameterDescription, RowDescription, NoData
        return t == _FIRST_RESPONSE.get(k, -1) or (k == OP_EXECUTE and t in _FIRST_EXECUTE)

    def _groups_pending(self) -> int:
        return sum(1 for op in self._pending if op[0] in _TERMINATORS)

    def _close_answered_groups(self) -> None:
        """Backend resync: groups requested by an earlier frontend chunk than the newest group
        were answered before the backend read that chunk (it reads only when its input is
        exhausted, and flushes at ReadyForQuery), so the bytes being resynchronised on
        cannot belong to them: close them as truncated, leaving the newest chunk's groups."""
        pending = self._pending
        terms = [(i, _request_ts(op)) for i, op in enumerate(pending) if op[0] in _TERMINATORS]
        if len(terms) < 2:
            return
        newest = terms[-1][1]
        stale = [i for i, t in terms if t != newest]
        if not stale:
            return
        done = self._done
        for _ in range(stale[-1] + 1):
            self._close_op(pending.popleft(), TRUNCATED, done)
        self._batch_error = None
        self._emit_done()

    def _go_encrypted(self, ts: int, direction: int) -> None:
        if not self._encrypted:
            self._encrypted = True
            self._records.append(Gap(ts, direction, 0, "encrypted"))
        self._fe.mode = self._be.mode = ENCRYPTED
        self._fe.buf.clear()
        self._be.buf.clear()

    def _internal_error(self, direction: int, data: object, ts: int) -> None:
        """A bug or an input no check anticipated: never let it escape; resync instead."""
        try:
            try:
                n = len(data)  # type: ignore[arg-type]
            except TypeError:
                n = 0
            self.decode_errors += 1
            self._trunc = False
            st = self._be if direction == BACKEND else self._fe
            if st.mode in (NORMAL, STARTUP, RAW1):
                self._enter_desync(st, TRUNCATED)
                self._records.append(Gap(ts, st.direction, n, "desync"))
            else:
                st.buf.clear()
        except Exception:
            pass

    # -- frontend ------------------------------------------------------------------------------

    def _fe_startup(self, b: bytes | bytearray, off: int, end: int, ts: int) -> int:
        st = self._fe
        ln: int
        code: int
        while end - off >= 8:
            if b[off] == 0x16:  # a TLS ClientHello: ciphertext from here on
                self._go_encrypted(ts, FRONTEND)
                return end
            ln, code = _STARTUP_HEAD.unpack_from(b, off)
            if ln < 8 or ln > STARTUP_MAX:
                self._enter_desync(st, 0, keep_buf=True)
                return off
            if end - off < ln:
                return off
            if code == StartupCode.SSLRequest and ln == 8:
                self._tls = True
                if not self.tls_visible and self._be.mode == NORMAL:
                    self._be.mode = RAW1
                off += 8
                continue
            if code == StartupCode.GSSENCRequest and ln == 8:
                self._gss = True
                if not self.tls_visible and self._be.mode == NORMAL:
                    self._be.mode = RAW1
                off += 8
                continue
            if code == StartupCode.CancelRequest and 12 <= ln <= 8 + 256:
                self._records.append(CancelInfo(ts, INT32.unpack_from(b, off + 8)[0]))
                self._cancel = True
                st.mode = DONE
                return off + ln
            major = code >> 16
            if major == 3 and code & 0xFFFF < 100:
                try:
                    params = parse_startup_parameters(b, off + 8, off + ln)
                except ProtocolError:
                    self._enter_desync(st, 0, keep_buf=True)
                    return off
                self.params = params
                if "client_encoding" in params:
                    self._enc = _codec(params["client_encoding"])
                self._records.append(StartupInfo(ts, params, f"{major}.{code & 0xFFFF}",
                                                 self._tls, self._gss))
                st.mode = NORMAL
                return off + ln
            if major in (1, 2) and code & 0xFFFF < 100:  # pre-7.4 protocol: the server refuses
                self._records.append(StartupInfo(ts, {}, f"{major}.{code & 0xFFFF}",
                                                 self._tls, self._gss))
                st.mode = DONE
                return off + ln
            self._enter_desync(st, 0, keep_buf=True)
            return off
        if end - off >= 1 and b[off] == 0x16:
            self._go_encrypted(ts, FRONTEND)
            return end
        return off

    def _fe_parse(self, b: bytes | bytearray, off: int, end: int, ts: int) -> int:
        """Handle the complete frontend messages of b[off:end]; return where the first
        incomplete one starts (or `end`). Stops early when the stream mode changes."""
        st = self._fe
        lo = FRONTEND_MIN
        hi = FRONTEND_MAX
        hdr = HEADER.unpack_from
        handlers = _FE_HANDLERS
        i32 = INT32.unpack_from
        t: int
        ln: int
        while end - off >= 5:
            t, ln = hdr(b, off)
            if ln < lo[t] or ln > hi[t]:
                st.lost += end - off
                self._enter_desync(st, 0, keep_buf=True)
                return end
            mend = off + 1 + ln
            if t == 100:  # CopyData (COPY FROM STDIN): skipped by length, a run in one go
                while mend <= end - 5 and b[mend] == 100:
                    ln = i32(b, mend + 1)[0]
                    if ln < 4 or ln > GIB:
                        break  # the outer loop reports it
                    mend += 1 + ln
                if mend > end:
                    st.skip = mend - end
                    return end
                off = mend
                continue
            if mend > end:
                if ln >= MESSAGE_CAP and end - off >= MESSAGE_CAP:
                    self._handle_partial(st, t, b, off, end, ts)
                    st.skip = mend - end
                    return end
                return off
            handlers[t](self, b, off + 5, mend, ts)
            if st.mode != NORMAL:
                return mend
            off = mend
        if len(self._pending) > MAX_PENDING:
            self._pending_overflow()
        return off

    def _open_batch(self) -> int:
        """The first extended-protocol message after a Sync opens a batch: a new query_seq."""
        self._batch_open = True
        self._qseq += 1
        return self._qseq

    def _pending_overflow(self) -> None:
        """Bounded memory: a FIFO that never drains (garbage that parses, a server that never
        answers) loses its oldest operations, flagged truncated."""
        pending = self._pending
        while len(pending) > MAX_PENDING:
            self._close_op(pending.popleft(), TRUNCATED, self._done)
        self._done_overflow()

    def _fe_query(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        nul = b.find(b"\0", s, e)
        text = (b[s:nul] if nul >= 0 else b[s:e]).decode(self._enc, "replace")
        qseq = self._qseq = self._qseq + 1
        self._batch_open = False
        opno = self._opno = self._opno + 1
        if self._trunc:
            stmts = [Statement("simple", text, ts, qseq, flags=TRUNCATED)]
        elif ";" in text and not _one_statement(text):
            parts = self._split(text)
            if len(parts) > 1:
                stmts = [Statement("simple", p, ts, qseq) for p in parts]
            else:
                stmts = [Statement("simple", text, ts, qseq)]
        else:
            stmts = [Statement("simple", text, ts, qseq)]
        self._pending.append([OP_QUERY, stmts, text, opno, 0, False, False])

    def _name(self, b: bytes | bytearray, s: int, e: int) -> tuple[str, int]:
        """A String at b[s:e] and the offset after its NUL (e if unterminated)."""
        if s < e and b[s] == 0:
            return "", s + 1
        nul = b.find(b"\0", s, e)
        if nul < 0:
            return b[s:e].decode(self._enc, "replace"), e
        return b[s:nul].decode(self._enc, "replace"), nul + 1

    def _fe_parse_msg(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        name, p = self._name(b, s, e)
        nul = b.find(b"\0", p, e)
        flags = 0
        if nul < 0 or self._trunc:
            flags = TRUNCATED
            nul = e if nul < 0 else nul
        text = b[p:nul].decode(self._enc, "replace")
        self._opno += 1
        entry = (name, text, flags, self._opno)
        stmts = self._stmts
        prev = stmts.get(name)
        stmts[name] = entry
        self._stmt_chars += len(text)
        if len(stmts) > MAX_PREPARED or self._stmt_chars > MAX_PREPARED_CHARS:
            self._evict_statements()
        qseq = self._qseq if self._batch_open else self._open_batch()
        self._pending.append((OP_PARSE, name, entry, prev, ts, qseq))

    def _fe_bind(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        portal, p = self._name(b, s, e)
        sname, o = self._name(b, p, e)
        flags = TRUNCATED if self._trunc else 0
        n = 0
        formats: tuple[int, ...] = ()
        values = None
        if o + 2 <= e:
            nf = INT16.unpack_from(b, o)[0]
            o += 2
            if nf == 1 and o + 2 <= e:
                f0 = INT16.unpack_from(b, o)[0]
                o += 2
            elif nf > 1 and o + 2 * nf <= e:
                f0 = -1
                fl = struct.unpack_from(f">{nf}h", b, o)
                o += 2 * nf
            else:
                f0 = 0
                o += 2 * max(nf, 0)
            if o + 2 <= e:
                n = INT16.unpack_from(b, o)[0]
                o += 2
                if n < 0:
                    n = 0
                formats = (f0,) * n if f0 >= 0 else tuple(fl)
                if self.capture_params:
                    values = self._param_values(b, o, e, formats, n)
        sentry = self._stmts.get(sname)
        if sentry is None:
            text = None
            flags |= UNKNOWN_STATEMENT
        else:
            text = sentry[1]
            flags |= sentry[2]
        pentry = (sname, text, flags, n, formats, values)
        portals = self._portals
        prev = portals.get(portal)
        portals[portal] = pentry
        if len(portals) > MAX_PREPARED:
            _drop_oldest(portals, MAX_PREPARED // 10)
        qseq = self._qseq if self._batch_open else self._open_batch()
        self._pending.append((OP_BIND, portal, pentry, prev, ts, qseq))

    def _evict_statements(self) -> None:
        """Bounded memory: forget the oldest prepared statements (a later Bind of one of them
        is reported as UNKNOWN_STATEMENT) until the map is within its bounds."""
        stmts = self._stmts
        total = sum(len(v[1] or "") for v in stmts.values())
        # Evict a tenth more than needed, so that this O(n) pass is amortised over many Parse.
        keep = MAX_PREPARED * 9 // 10
        budget = MAX_PREPARED_CHARS * 9 // 10
        drop: list[str] = []
        for name, v in stmts.items():
            if len(stmts) - len(drop) <= keep and total <= budget:
                break
            drop.append(name)
            total -= len(v[1] or "")
        for name in drop:
            del stmts[name]
        self._stmt_chars = total

    def _param_values(self, b: bytes | bytearray, o: int, e: int, formats: tuple[int, ...],
                      n: int) -> tuple[str | None, ...]:
        out: list[str | None] = []
        enc = self._enc
        for i in range(n):
            if o + 4 > e:
                break
            ln = INT32.unpack_from(b, o)[0]
            o += 4
            if ln < 0:
                out.append(None)
                continue
            raw = b[o:min(o + ln, e, o + MAX_PARAM_CHARS * 4)]
            o += ln
            if i < len(formats) and formats[i] == 1:
                v = bytes(raw[:MAX_PARAM_CHARS // 2]).hex()
                if ln > MAX_PARAM_CHARS // 2:
                    v += "…"
            else:
                v = raw.decode(enc, "replace")
                if len(v) > MAX_PARAM_CHARS or len(raw) < ln:
                    v = v[:MAX_PARAM_CHARS] + "…"
            out.append(v)
        return tuple(out)

    def _fe_describe(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        name, _ = self._name(b, s + 1, e)
        qseq = self._qseq if self._batch_open else self._open_batch()
        self._pending.append((OP_DESCRIBE, b[s], name, ts, qseq))

    def _fe_execute(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        portal, _ = self._name(b, s, e)
        qseq = self._qseq if self._batch_open else self._open_batch()
        self._opno += 1
        pentry = self._portals.get(portal)
        if pentry is None:
            st = Statement("extended", None, ts, qseq, None, portal, flags=UNKNOWN_STATEMENT)
        else:
            # Positional (field order of Statement): measurably cheaper than keywords here.
            st = Statement("extended", pentry[1], ts, qseq, pentry[0], portal, 0, None, None,
                           None, 0, None, None, None, None, None, None, None, pentry[3],
                           pentry[4], pentry[5], pentry[2])
        self._pending.append((OP_EXECUTE, st, self._opno))

    def _fe_sync(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        if self._copy_in_ext:
            return  # the server ignores Sync during COPY FROM STDIN (protocol-flow, COPY)
        if not self._batch_open:  # a lone Sync is an (empty) batch of its own
            self._qseq += 1
        self._batch_open = False
        self._pending.append((OP_SYNC, ts))

    def _fe_close(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        kind = b[s]
        name, _ = self._name(b, s + 1, e)
        table = self._stmts if kind == 0x53 else self._portals
        removed = table.pop(name, None)
        qseq = self._qseq if self._batch_open else self._open_batch()
        self._pending.append((OP_CLOSE, kind, name, removed, ts, qseq))

    def _fe_terminate(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        self._terminated = True
        self._fe.mode = DONE
        if not self._pending and not self._done:
            self._end(ts, "terminate", None, None)

    def _fe_copy_end(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        self._copy_in_ext = False

    def _fe_function_call(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        oid = struct.unpack_from(">I", b, s)[0] if s + 4 <= e else None
        self._qseq += 1
        self._batch_open = False
        st = Statement("function_call", None, ts, self._qseq, function_oid=oid,
                       flags=TRUNCATED if self._trunc else 0)
        self._pending.append([OP_FCALL, st, False])

    def _fe_ignore(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        """Flush, PasswordMessage/SASL/GSS responses (never stored), complete CopyData."""

    # -- backend -------------------------------------------------------------------------------

    def _be_parse(self, b: bytes | bytearray, off: int, end: int, ts: int) -> int:
        """Backend twin of _fe_parse. The messages of a pgbench-like round trip (DataRow,
        CommandComplete, RowDescription, ReadyForQuery, ParseComplete, BindComplete) are
        handled inline: a method call per message is a measurable share of the budget."""
        st = self._be
        lo = BACKEND_MIN
        hi = BACKEND_MAX
        hdr = HEADER.unpack_from
        handlers = _BE_HANDLERS
        pending = self._pending
        i32 = INT32.unpack_from
        t: int
        ln: int
        while end - off >= 5:
            t, ln = hdr(b, off)
            if ln < lo[t] or ln > hi[t]:
                self._enter_desync(st, 0, keep_buf=True)
                return off
            mend = off + 1 + ln
            if t == 68:  # DataRow: count, never parse, never buffer; a run of them in one go
                rows = self._rows + 1
                while mend <= end - 5 and b[mend] == 68:
                    ln = i32(b, mend + 1)[0]
                    if ln < 6 or ln > GIB:
                        break  # the outer loop reports it
                    off = mend
                    mend = off + 1 + ln
                    rows += 1
                self._rows = rows
                if mend > end:
                    st.skip = mend - end
                    return end
                off = mend
                continue
            if mend > end:
                if t == 100:  # CopyData
                    st.skip = mend - end
                    return end
                if ln >= MESSAGE_CAP and end - off >= MESSAGE_CAP:
                    self._handle_partial(st, t, b, off, end, ts)
                    st.skip = mend - end
                    return end
                return off
            if t == 67:
                self._be_command_complete(b, off + 5, mend, ts)
            elif t == 84:  # RowDescription: answers a Describe, else part of a result
                if pending and pending[0][0] == OP_DESCRIBE:
                    pending.popleft()
            elif t == 90:
                self._ready(b[off + 5], ts)
                if st.mode != NORMAL:
                    return mend
            elif t == 49 or t == 50:  # ParseComplete, BindComplete
                kind = OP_PARSE if t == 49 else OP_BIND
                if pending and pending[0][0] == kind:
                    pending.popleft()
                else:
                    self._expect(kind)
            else:
                handlers[t](self, b, off + 5, mend, ts)
                if st.mode != NORMAL:
                    return mend
            off = mend
        return off

    def _tag(self, tag: bytes) -> tuple[str, int | None, int]:
        s = tag.decode("ascii", "replace")
        parts = s.split(" ")
        head = parts[0]
        if len(parts) >= 2 and head in ROW_COUNT_COMMANDS and parts[-1].isdigit():
            info: tuple[str, int | None, int] = (head, int(parts[-1]), 0)
        else:
            info = (s, None, _SPECIAL_TAGS.get(s, 0))
        tags = self._tags
        if len(tags) >= MAX_TAG_CACHE:
            tags.clear()
        tags[tag] = info
        return info

    def _current(self, ts: int, skip_stale: bool = True) -> tuple[Statement, Any]:
        """The statement the next completion belongs to, and its op (None: it is done).
        skip_stale: a Sync/FunctionCall at the head cannot receive a CommandComplete: it is
        stale (its group's responses were lost), close it and look further."""
        pending = self._pending
        while pending:
            op = pending[0]
            k = op[0]
            if k == OP_QUERY:
                stmts = op[Q_STMTS]
                i = op[Q_IDX]
                if i < len(stmts):
                    return stmts[i], op
                st = Statement("simple", op[Q_TEXT], stmts[0].ts_start_ns,
                               stmts[0].query_seq)
                stmts.append(st)
                op[Q_MISMATCH] = True
                return st, op
            if k == OP_EXECUTE or (k == OP_FCALL and not op[2]):
                return op[1], op
            if k in _TERMINATORS and not skip_stale:
                break
            # A completion while Parse/Bind/Sync... is at the head: their own responses were
            # not seen (capture loss, or bytes misread as messages). Close them, look further.
            self._close_op(pending.popleft(), TRUNCATED, self._done)
        self._misframed_frontend()
        st = Statement("unknown", None, None, 0, flags=UNKNOWN_STATEMENT | TRUNCATED)
        return st, None

    def _misframed_frontend(self) -> None:
        """The server answered something we have no request for. If our frontend framing is
        inside a message (buffered or skipping), that message is not real: the server, which
        reads the same bytes, has already acted on what follows. Resynchronise there."""
        fe = self._fe
        if fe.mode == NORMAL and (fe.buf or fe.skip) and not self._copy_active:
            fe.lost += len(fe.buf)  # what follows is counted as it is skipped
            self._enter_desync(fe, 0)

    def _close_stale_groups(self) -> None:
        """After a resync, until a group completes cleanly: a new frontend chunk means the
        backend finished everything it had read (it reads only when its input is exhausted,
        and flushes at ReadyForQuery). So groups still pending were never answered: close
        them as truncated; and if our backend framing is inside a message, that message is
        not real (the server has finished writing): resynchronise the backend side."""
        if self._copy_active or self._fe.mode != NORMAL:
            return
        pending = self._pending
        last = -1
        for i, op in enumerate(pending):
            if op[0] in _TERMINATORS:
                last = i
        if last < 0:
            return
        be = self._be
        if be.mode == NORMAL and (be.buf or be.skip):
            be.lost += len(be.buf)
            self._enter_desync(be, 0)
        done = self._done
        for _ in range(last + 1):
            self._close_op(pending.popleft(), TRUNCATED, done)
        self._batch_error = None
        self._emit_done()

    def _complete(self, st: Statement, op: Any) -> None:
        """`st` got its CommandComplete/EmptyQueryResponse/PortalSuspended/ErrorResponse."""
        self._rows = 0
        if op is None:
            self._done.append(st)
            return
        k = op[0]
        if k == OP_QUERY:
            op[Q_IDX] += 1
        elif k == OP_EXECUTE:
            self._pending.popleft()
        else:  # OP_FCALL stays until its ReadyForQuery
            op[2] = True
        self._done.append(st)
        if len(self._done) > MAX_DONE:
            self._done_overflow()

    def _be_command_complete(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        tag = b[s:e - 1] if b[e - 1] == 0 else b[s:e]
        if type(tag) is not bytes:
            tag = bytes(tag)
        info = self._tags.get(tag) or self._tag(tag)
        pending = self._pending
        if pending:
            op = pending[0]
            if op[0] == OP_QUERY and op[4] < len(op[1]) and not self._trunc:
                # The common case, inlined: the next statement of the head Query completed.
                st = op[1][op[4]]
                op[4] += 1
                st.command_tag = info[0]
                st.rows = info[1]
                st.ts_end_ns = ts
                st.rows_sent = self._rows
                self._rows = 0
                self._done.append(st)
                if info[2]:
                    self._tag_effect(info[2], st.text, op[3])
                return
        st, op = self._current(ts)
        st.command_tag = info[0]
        st.rows = info[1]
        st.ts_end_ns = ts
        st.rows_sent = self._rows
        if self._trunc:
            st.flags |= TRUNCATED
        self._complete(st, op)
        if info[2] and op is not None and (op[0] == OP_QUERY or op[0] == OP_EXECUTE):
            self._tag_effect(info[2], st.text, op[3] if op[0] == OP_QUERY else op[2])

    def _tag_effect(self, kind: int, text: str | None, opno: int) -> None:
        """SQL PREPARE / DEALLOCATE / DISCARD ALL changed the server's statement map. Entries
        created by messages after this statement (pipelined) are left alone."""
        stmts = self._stmts
        if kind == _TAG_DISCARD_ALL:
            for name in [k for k, v in stmts.items() if v[3] < opno]:
                del stmts[name]
            if text and text.lstrip()[:7].upper() == "DISCARD":
                self._portals.clear()
        elif text is None:
            return
        elif kind == _TAG_DEALLOCATE:
            m = _DEALLOCATE_RE.match(text)
            if m:
                name = _ident(m.group(1))
                if name in stmts and stmts[name][3] < opno:
                    del stmts[name]
        elif kind == _TAG_PREPARE:
            m = _PREPARE_RE.match(text)
            if m:
                name = _ident(m.group(1))
                stmts[name] = (name, m.group(2), 0, opno)

    def _be_empty_query(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        st, op = self._current(ts)
        st.ts_end_ns = ts
        self._complete(st, op)

    def _be_portal_suspended(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        st, op = self._current(ts)
        st.ts_end_ns = ts
        st.suspended = True
        st.rows_sent = self._rows
        self._complete(st, op)

    def _be_error(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        f = parse_notice_fields(b, s, e, self._enc)
        sev = f.get(86) or f.get(83)  # V (non-localized), else S
        info: _ErrInfo = (f.get(67), f.get(77), sev, f.get(110), f.get(115), f.get(116))
        if sev == "FATAL" or sev == "PANIC":
            self._fatal(info, ts)
            return
        pending = self._pending
        done = self._done
        op: Any = pending[0] if pending else None
        k = op[0] if op is not None else -1
        if k == OP_QUERY:
            stmts = op[Q_STMTS]
            i = op[Q_IDX]
            if i == 0 and len(stmts) > 1 and info[0] == "42601" and 80 in f:
                # A syntax error with a position: the server's raw parser refused the whole
                # string (PostgreSQL 15's grammar may differ from pglast's), nothing ran.
                del stmts[1:]
                stmts[0].text = op[Q_TEXT]
            if i >= len(stmts) and done and done[-1].sqlstate is None:
                # All statements completed: an error at the implicit COMMIT (deferred
                # constraint) belongs to the last one.
                _set_error(done[-1], info)
                done[-1].error_phase = "commit"
                op[Q_FAILED] = True
                return
            st, op = self._current(ts)
            op[Q_FAILED] = True
        elif k == OP_EXECUTE or k == OP_FCALL:
            st = op[1]
            self._batch_error = info
        elif k in (OP_PARSE, OP_BIND, OP_DESCRIBE, OP_CLOSE):
            pending.popleft()
            self._batch_error = info
            self._rollback(op, failed=True)
            target = self._error_target(op)
            if target is not None:
                _set_error(target, info)
                target.error_phase = _PHASES[k]
                target.ts_end_ns = ts
                if self._trunc:
                    target.flags |= TRUNCATED
                return
            if k == OP_PARSE or k == OP_BIND:
                st = self._refused_statement(op)
                st.error_phase = _PHASES[k]
                op = None
            else:
                return
        elif k == OP_SYNC:
            self._batch_error = info
            if done and done[-1].sqlstate is None:  # error at the implicit COMMIT at Sync
                _set_error(done[-1], info)
                done[-1].error_phase = "commit"
                return
            st, op = self._current(ts, skip_stale=False)  # unknown
        else:
            st, op = self._current(ts)
        _set_error(st, info)
        st.ts_end_ns = ts
        st.rows_sent = self._rows
        if self._trunc:
            st.flags |= TRUNCATED
        self._complete(st, op)

    def _error_target(self, failed: Any) -> Statement | None:
        """The Execute of this batch that a failed Parse/Bind/Describe was preparing."""
        k = failed[0]
        for op in self._pending:
            kk = op[0]
            if kk in _TERMINATORS:
                return None
            if kk != OP_EXECUTE:
                continue
            st = op[1]
            if k == OP_PARSE and st.statement_name == failed[1]:
                return st  # type: ignore[no-any-return]
            if k == OP_BIND and st.portal == failed[1]:
                return st  # type: ignore[no-any-return]
            if k == OP_DESCRIBE and (st.statement_name if failed[1] == 0x53 else st.portal) \
                    == failed[2]:
                return st  # type: ignore[no-any-return]
        return None

    def _refused_statement(self, op: Any) -> Statement:
        """A Statement for a refused Parse/Bind that no Execute of its batch followed."""
        if op[0] == OP_PARSE:
            name, entry = op[1], op[2]
            return Statement("extended", entry[1], op[4], op[5], name, None, flags=entry[2])
        portal, p = op[1], op[2]
        return Statement("extended", p[1], op[4], op[5], p[0], portal, param_count=p[3],
                         param_formats=p[4], param_values=p[5], flags=p[2])

    def _rollback(self, op: Any, failed: bool) -> None:
        """Undo the optimistic map change of a Parse/Bind/Close the server refused (failed)
        or never ran (skipped)."""
        k = op[0]
        if k == OP_PARSE:
            name, entry, prev = op[1], op[2], op[3]
            stmts = self._stmts
            if stmts.get(name) is entry:
                # A refused unnamed Parse has already dropped the previous unnamed statement.
                if prev is not None and not (failed and name == ""):
                    stmts[name] = prev
                else:
                    del stmts[name]
        elif k == OP_BIND:
            portal, entry, prev = op[1], op[2], op[3]
            portals = self._portals
            if portals.get(portal) is entry:
                if prev is not None:
                    portals[portal] = prev
                else:
                    del portals[portal]
        elif k == OP_CLOSE and not failed:
            removed = op[3]
            if removed is not None:
                table = self._stmts if op[1] == 0x53 else self._portals
                table.setdefault(op[2], removed)

    def _fatal(self, info: _ErrInfo, ts: int) -> None:
        """FATAL/PANIC: the backend ends the session after this message."""
        pending = self._pending
        if pending:
            st, op = self._current(ts)
            if op is not None:
                _set_error(st, info)
                st.ts_end_ns = ts
                st.rows_sent = self._rows
                self._complete(st, op)
        self._flush_all(INCOMPLETE)
        self._end(ts, "error", info[0], info[1])

    def _be_row_description(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        pending = self._pending
        if pending and pending[0][0] == OP_DESCRIBE:
            pending.popleft()

    def _be_no_data(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        self._expect(OP_DESCRIBE)

    def _be_parse_complete(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        self._expect(OP_PARSE)

    def _be_bind_complete(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        self._expect(OP_BIND)

    def _be_close_complete(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        self._expect(OP_CLOSE)

    def _expect(self, kind: int) -> None:
        """Pop the head op, which must be `kind`; if it is not, our FIFO lost sync with the
        server: close the ops before the first `kind` of this batch as truncated."""
        pending = self._pending
        if pending and pending[0][0] == kind:
            pending.popleft()
            return
        for i, op in enumerate(pending):
            if op[0] == kind:
                for _ in range(i):
                    self._close_op(pending.popleft(), TRUNCATED, self._done)
                pending.popleft()
                return
            if op[0] in _TERMINATORS:
                return

    def _be_copy_in(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        self._copy_active = True
        pending = self._pending
        if pending and pending[0][0] == OP_EXECUTE:
            # Extended-protocol COPY FROM STDIN: Syncs the client sent with the Execute are
            # ignored by the server; the one after CopyDone/CopyFail ends the batch.
            while len(pending) > 1 and pending[1][0] == OP_SYNC:
                del pending[1]
            self._copy_in_ext = True

    def _be_function_call_response(self, b: bytes | bytearray, s: int, e: int,
                                   ts: int) -> None:
        pending = self._pending
        if pending and pending[0][0] == OP_FCALL:
            op = pending[0]
            st = op[1]
            st.ts_end_ns = ts
            self._complete(st, op)

    def _be_authentication(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        if INT32.unpack_from(b, s)[0] == 0:
            self._records.append(Authenticated(ts))

    def _be_key_data(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        self.backend_pid = INT32.unpack_from(b, s)[0]

    def _be_parameter_status(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        name, p = self._name(b, s, e)
        value, _ = self._name(b, p, e)
        ps = self.server_params
        if name in ps or len(ps) < 256:
            ps[name] = value
        if name == "client_encoding":
            self._enc = _codec(value)

    def _be_copy_both(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        self._copy_active = True

    def _be_negotiate(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        self.negotiated_version = INT32.unpack_from(b, s)[0]

    def _be_ignore(self, b: bytes | bytearray, s: int, e: int, ts: int) -> None:
        """NoticeResponse, NotificationResponse, ParameterDescription, CopyOutResponse,
        CopyBothResponse, CopyData, CopyDone: nothing to record."""

    # -- groups --------------------------------------------------------------------------------

    def _ready(self, status: int, ts: int) -> None:
        """ReadyForQuery: the head group (Query, Sync batch, FunctionCall) is over."""
        pending = self._pending
        done = self._done
        self._rows = 0
        if pending:
            op = pending[0]
            k = op[0]
            if k == OP_QUERY and op[4] >= len(op[1]) and not op[6]:
                pending.popleft()  # the common case: every statement answered
                self._suspect = False
            elif k == OP_SYNC and self._batch_error is None:
                pending.popleft()
                self._suspect = False
            else:
                flag = SKIPPED if self._batch_error is not None else 0
                while pending:
                    op = pending.popleft()
                    k = op[0]
                    if k in _TERMINATORS:
                        self._close_op(op, flag, done)
                        break
                    self._close_op(op, flag, done)
        elif not done:
            self._misframed_frontend()  # a ReadyForQuery for nothing we saw
        self._batch_error = None
        self._copy_in_ext = False
        self._copy_active = False
        if done:
            txn = _STATUS.get(status)
            records = self._records
            seq = self._seq
            for st in done:
                st.txn_status = txn
                seq += 1
                st.seq = seq
                records.append(st)
            self._seq = seq
            done.clear()
        if self._terminated and not pending and not self._ended:
            self._end(ts, "terminate", None, None)

    def _close_op(self, op: Any, flag: int, done: list[Statement]) -> None:
        """Take `op` off the FIFO without (more) responses; `flag` says why: 0 (its group's
        ReadyForQuery arrived in sync), SKIPPED (an error earlier in its batch), TRUNCATED
        (capture loss), INCOMPLETE (session end)."""
        k = op[0]
        if k == OP_QUERY:
            stmts = op[Q_STMTS]
            i = op[Q_IDX]
            if op[Q_MISMATCH] or (flag == 0 and 0 < i < len(stmts) and not op[Q_FAILED]):
                # The split disagreed with the server's responses: attribute the whole text.
                for st in stmts[:i]:
                    st.text = op[Q_TEXT]
                return
            if i < len(stmts):
                rest = stmts[i:]
                if op[Q_FAILED]:
                    for st in rest:
                        st.flags |= SKIPPED
                else:
                    if i == 0 and len(rest) > 1 and flag == 0:
                        rest = rest[:1]
                        rest[0].text = op[Q_TEXT]
                    for st in rest:
                        st.flags |= flag or TRUNCATED
                done.extend(rest)
        elif k == OP_EXECUTE:
            st = op[1]
            if st.ts_end_ns is None:  # never answered (an error target has its end time)
                st.flags |= flag or TRUNCATED
            done.append(st)
        elif k == OP_FCALL:
            if not op[2]:
                st = op[1]
                st.flags |= flag or TRUNCATED
                done.append(st)
        elif flag == SKIPPED:
            self._rollback(op, failed=False)

    def _flush_all(self, flag: int) -> None:
        """Close every pending operation with `flag` and emit what is done (no txn status)."""
        pending = self._pending
        done = self._done
        if self._batch_error is not None and flag == INCOMPLETE:
            # The rest of a failed batch was skipped by the server, not cut by the session end.
            while pending and pending[0][0] not in _TERMINATORS:
                self._close_op(pending.popleft(), SKIPPED, done)
        while pending:
            self._close_op(pending.popleft(), flag, done)
        self._batch_error = None
        self._batch_open = False
        self._rows = 0
        self._copy_in_ext = False
        self._emit_done()

    def _done_overflow(self) -> None:
        if len(self._done) > MAX_DONE:
            self._emit_done()

    def _emit_done(self) -> None:
        records = self._records
        for st in self._done:
            self._seq += 1
            st.seq = self._seq
            records.append(st)
        self._done.clear()

    def _flag_head(self, flag: int) -> None:
        """Flag the statement whose response is being received."""
        pending = self._pending
        for op in pending:
            k = op[0]
            if k == OP_QUERY:
                i = op[Q_IDX]
                if i < len(op[Q_STMTS]):
                    op[Q_STMTS][i].flags |= flag
                return
            if k == OP_EXECUTE or k == OP_FCALL:
                op[1].flags |= flag
                return
            if k in _TERMINATORS:
                return

    def _end(self, ts: int, reason: str, sqlstate: str | None, message: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._fe.mode = self._be.mode = DONE
        if self._cancel:
            return  # a CancelRequest connection is not a session
        self._records.append(SessionEnd(ts, reason, sqlstate, message, self._seq, self._fe.pos,
                                        self._be.pos))


_Handler = Callable[[Connection, Any, int, int, int], None]


def _handler_table(entries: dict[int, _Handler], default: _Handler | None) -> list[Any]:
    table: list[Any] = [default] * 256
    for t, h in entries.items():
        table[t] = h
    return table


C = Connection
_FE_HANDLERS = _handler_table({
    ord("Q"): C._fe_query, ord("P"): C._fe_parse_msg, ord("B"): C._fe_bind,
    ord("D"): C._fe_describe, ord("E"): C._fe_execute, ord("S"): C._fe_sync,
    ord("C"): C._fe_close, ord("X"): C._fe_terminate, ord("c"): C._fe_copy_end,
    ord("f"): C._fe_copy_end, ord("F"): C._fe_function_call, ord("H"): C._fe_ignore,
    ord("p"): C._fe_ignore, ord("d"): C._fe_ignore,
}, None)
_BE_HANDLERS = _handler_table({
    ord("C"): C._be_command_complete, ord("Z"): lambda c, b, s, e, ts: c._ready(b[s], ts),
    ord("E"): C._be_error, ord("I"): C._be_empty_query, ord("s"): C._be_portal_suspended,
    ord("T"): C._be_row_description, ord("n"): C._be_no_data, ord("1"): C._be_parse_complete,
    ord("2"): C._be_bind_complete, ord("3"): C._be_close_complete, ord("G"): C._be_copy_in,
    ord("W"): C._be_copy_both, ord("V"): C._be_function_call_response,
    ord("R"): C._be_authentication,
    ord("K"): C._be_key_data, ord("S"): C._be_parameter_status, ord("v"): C._be_negotiate,
}, C._be_ignore)
del C

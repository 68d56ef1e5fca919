"""The PostgreSQL protocol 3.0 messages as frozen dataclasses, and functions that parse them.

One class per message, named as in the PostgreSQL documentation, section "Message Formats"
(https://www.postgresql.org/docs/15/protocol-message-formats.html). Every docstring gives the byte
layout after the type byte and the Int32 length (which counts itself but not the type byte).
Integers are big-endian; a String is NUL-terminated.

Privacy is part of the model, not of its users: PasswordMessage and the SASL/GSS messages keep
only their length, never their bytes; DataRow, CopyData, FunctionCallResponse and
NotificationResponse keep counts and lengths, never values; secret keys are never kept. Bind keeps
parameter values only when the caller asks for them (`with_values=True`).

These classes are the documented model used for the non-hot messages, by tests and tools. The
per-connection decoder (`session.py`) parses the hot messages inline without creating them.

`parse_frontend`, `parse_backend` and `parse_startup` raise `ProtocolError` on malformed bodies.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Union

from agent.pgwire.codes import (
    PROTOCOL_3_0,
    AuthenticationCode,
    BackendType,
    ErrorField,
    FrontendType,
    StartupCode,
)

_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")


class ProtocolError(ValueError):
    """A message body does not match its documented layout."""


class _Reader:
    """Sequential reads over one message body; every overrun raises ProtocolError."""

    __slots__ = ("b", "off", "end", "encoding")

    def __init__(self, body: bytes, encoding: str = "utf-8") -> None:
        self.b = bytes(body)
        self.off = 0
        self.end = len(self.b)
        self.encoding = encoding

    def _need(self, n: int) -> int:
        off = self.off
        if n < 0 or off + n > self.end:
            raise ProtocolError(f"message body too short: need {n} bytes at {off} of {self.end}")
        self.off = off + n
        return off

    def byte(self) -> int:
        return self.b[self._need(1)]

    def int16(self) -> int:
        return int(_I16.unpack_from(self.b, self._need(2))[0])

    def uint16(self) -> int:
        return int(_U16.unpack_from(self.b, self._need(2))[0])

    def int32(self) -> int:
        return int(_I32.unpack_from(self.b, self._need(4))[0])

    def uint32(self) -> int:
        return int(_U32.unpack_from(self.b, self._need(4))[0])

    def raw(self, n: int) -> bytes:
        off = self._need(n)
        return self.b[off:off + n]

    def cstring(self) -> str:
        nul = self.b.find(b"\0", self.off, self.end)
        if nul < 0:
            raise ProtocolError(f"unterminated String at {self.off}")
        s = self.b[self.off:nul].decode(self.encoding, "replace")
        self.off = nul + 1
        return s

    def remaining(self) -> int:
        return self.end - self.off

    def done(self) -> None:
        if self.off != self.end:
            raise ProtocolError(f"{self.end - self.off} trailing bytes in message body")


# ---------------------------------------------------------------------------------------------
# Startup packets (untagged: Int32 length, Int32 code, ...)


@dataclass(frozen=True, slots=True)
class StartupMessage:
    """StartupMessage (F): Int32 len, Int32 protocol version (196608 = 3.0), then pairs of
    String name, String value (user, database, application_name, options, replication,
    client_encoding, _pq_.*), then a terminating NUL byte."""

    protocol_version: int
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """SSLRequest (F): Int32(8), Int32(80877103). Answered by one unframed byte 'S' or 'N'."""


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    """GSSENCRequest (F): Int32(8), Int32(80877104). Answered by one unframed byte 'G' or 'N'."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """CancelRequest (F): Int32(16), Int32(80877102), Int32 process ID of the target backend,
    Int32 secret key (4 bytes in protocol 3.0; longer in 3.2). The key is not kept."""

    process_id: int
    secret_key_length: int


# ---------------------------------------------------------------------------------------------
# Frontend messages


@dataclass(frozen=True, slots=True)
class Query:
    """Query (F) 'Q': String query text (may hold several ';'-separated statements)."""

    query: str


@dataclass(frozen=True, slots=True)
class Parse:
    """Parse (F) 'P': String prepared statement name ("" = unnamed), String query,
    Int16 number of parameter types, Int32 type OID per parameter (0 = unspecified)."""

    name: str
    query: str
    param_types: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Bind:
    """Bind (F) 'B': String portal, String statement, Int16 C format codes, Int16[C] codes
    (0 = text, 1 = binary; C = 0: all text, C = 1: one code for all), Int16 P parameters,
    then per parameter Int32 length (-1 = NULL) and that many bytes, Int16 R result format
    codes, Int16[R] codes. `param_formats` is expanded to one code per parameter;
    `param_values` is None unless parsed with `with_values=True`."""

    portal: str
    statement: str
    param_formats: tuple[int, ...]
    param_count: int
    param_values: tuple[bytes | None, ...] | None = None
    result_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Describe:
    """Describe (F) 'D': Byte1 'S' (prepared statement) or 'P' (portal), String name."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class Execute:
    """Execute (F) 'E': String portal, Int32 maximum number of rows (0 = no limit)."""

    portal: str
    max_rows: int


@dataclass(frozen=True, slots=True)
class Close:
    """Close (F) 'C': Byte1 'S' (prepared statement) or 'P' (portal), String name."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class Sync:
    """Sync (F) 'S': no body. Ends an extended-query batch; answered by ReadyForQuery."""


@dataclass(frozen=True, slots=True)
class Flush:
    """Flush (F) 'H': no body. Asks the server to send what it has buffered."""


@dataclass(frozen=True, slots=True)
class Terminate:
    """Terminate (F) 'X': no body. The client closes the session."""


@dataclass(frozen=True, slots=True)
class CopyData:
    """CopyData (F & B) 'd': Byte n data. Only the length is kept."""

    length: int


@dataclass(frozen=True, slots=True)
class CopyDone:
    """CopyDone (F & B) 'c': no body."""


@dataclass(frozen=True, slots=True)
class CopyFail:
    """CopyFail (F) 'f': String error message (the client's reason)."""

    message: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """FunctionCall (F) 'F': Int32 function OID, Int16 C argument format codes, Int16[C],
    Int16 N arguments, per argument Int32 length (-1 = NULL) and bytes, Int16 result format.
    Argument values are not kept."""

    function_oid: int
    arg_formats: tuple[int, ...]
    arg_count: int
    result_format: int


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """PasswordMessage / SASLInitialResponse / SASLResponse / GSSResponse (F) 'p'. The body
    (a password, its MD5 hash, SASL or GSSAPI data) is never kept: only its length."""

    length: int


# ---------------------------------------------------------------------------------------------
# Backend messages


@dataclass(frozen=True, slots=True)
class AuthenticationOk:
    """AuthenticationOk (B) 'R': Int32(0)."""


@dataclass(frozen=True, slots=True)
class AuthenticationKerberosV5:
    """AuthenticationKerberosV5 (B) 'R': Int32(2)."""


@dataclass(frozen=True, slots=True)
class AuthenticationCleartextPassword:
    """AuthenticationCleartextPassword (B) 'R': Int32(3)."""


@dataclass(frozen=True, slots=True)
class AuthenticationMD5Password:
    """AuthenticationMD5Password (B) 'R': Int32(5), Byte4 salt (not kept)."""


@dataclass(frozen=True, slots=True)
class AuthenticationSCMCredential:
    """AuthenticationSCMCredential (B) 'R': Int32(6) (servers before 9.1)."""


@dataclass(frozen=True, slots=True)
class AuthenticationGSS:
    """AuthenticationGSS (B) 'R': Int32(7)."""


@dataclass(frozen=True, slots=True)
class AuthenticationGSSContinue:
    """AuthenticationGSSContinue (B) 'R': Int32(8), Byte n GSSAPI/SSPI data (length kept)."""

    length: int


@dataclass(frozen=True, slots=True)
class AuthenticationSSPI:
    """AuthenticationSSPI (B) 'R': Int32(9)."""


@dataclass(frozen=True, slots=True)
class AuthenticationSASL:
    """AuthenticationSASL (B) 'R': Int32(10), String mechanism names, then a NUL byte."""

    mechanisms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AuthenticationSASLContinue:
    """AuthenticationSASLContinue (B) 'R': Int32(11), Byte n SASL data (length kept)."""

    length: int


@dataclass(frozen=True, slots=True)
class AuthenticationSASLFinal:
    """AuthenticationSASLFinal (B) 'R': Int32(12), Byte n SASL outcome data (length kept)."""

    length: int


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    """BackendKeyData (B) 'K': Int32 process ID of the backend, secret key (Int32 in 3.0;
    up to 256 bytes in 3.2). The key, which lets anyone cancel that backend's queries, is not
    kept."""

    process_id: int
    secret_key_length: int


@dataclass(frozen=True, slots=True)
class BindComplete:
    """BindComplete (B) '2': no body."""


@dataclass(frozen=True, slots=True)
class CloseComplete:
    """CloseComplete (B) '3': no body."""


@dataclass(frozen=True, slots=True)
class ParseComplete:
    """ParseComplete (B) '1': no body."""


@dataclass(frozen=True, slots=True)
class NoData:
    """NoData (B) 'n': no body. The described statement or portal returns no rows."""


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse:
    """EmptyQueryResponse (B) 'I': no body. Replaces CommandComplete for an empty query."""


@dataclass(frozen=True, slots=True)
class PortalSuspended:
    """PortalSuspended (B) 's': no body. Execute reached its row limit."""


@dataclass(frozen=True, slots=True)
class CommandComplete:
    """CommandComplete (B) 'C': String command tag, e.g. "SELECT 5", "INSERT 0 1",
    "UPDATE 3", "CREATE TABLE"."""

    tag: str

    @property
    def command(self) -> str:
        return split_command_tag(self.tag)[0]

    @property
    def rows(self) -> int | None:
        return split_command_tag(self.tag)[1]


# Commands whose tag ends with a row count (protocol-message-formats, CommandComplete).
ROW_COUNT_COMMANDS = frozenset({"INSERT", "SELECT", "UPDATE", "DELETE", "MERGE", "MOVE",
                                "FETCH", "COPY"})


def split_command_tag(tag: str) -> tuple[str, int | None]:
    """("INSERT", 1) for "INSERT 0 1"; ("CREATE TABLE", None) for "CREATE TABLE";
    ("SELECT", 5) for "SELECT 5". The command is the tag without its numbers."""
    parts = tag.split(" ")
    head = parts[0]
    if head in ROW_COUNT_COMMANDS and len(parts) >= 2 and parts[-1].isdigit():
        return head, int(parts[-1])
    return tag, None


@dataclass(frozen=True, slots=True)
class CopyResponseBase:
    """The shared layout of CopyInResponse, CopyOutResponse and CopyBothResponse (not a
    protocol message itself)."""

    format: int  # 0 text, 1 binary (overall)
    column_formats: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CopyInResponse(CopyResponseBase):
    """CopyInResponse (B) 'G': Int8 overall format (0 text, 1 binary), Int16 N columns,
    Int16[N] per-column format codes. The client now sends CopyData until CopyDone/CopyFail."""


@dataclass(frozen=True, slots=True)
class CopyOutResponse(CopyResponseBase):
    """CopyOutResponse (B) 'H': same layout as CopyInResponse; CopyData follows until CopyDone."""


@dataclass(frozen=True, slots=True)
class CopyBothResponse(CopyResponseBase):
    """CopyBothResponse (B) 'W': same layout; both sides exchange CopyData (replication)."""


@dataclass(frozen=True, slots=True)
class DataRow:
    """DataRow (B) 'D': Int16 N columns, per column Int32 length (-1 = NULL) and bytes.
    Values are never kept."""

    column_count: int
    length: int


@dataclass(frozen=True, slots=True)
class _NoticeFields:
    """Fields by code byte (never assume their order): Byte1 code, String value, ..., NUL."""

    severity: str | None = None  # 'V' (non-localized), falling back to 'S'
    sqlstate: str | None = None  # 'C'
    message: str | None = None  # 'M'
    detail: str | None = None  # 'D' (may quote data values: never copied into audit records)
    hint: str | None = None  # 'H'
    position: int | None = None  # 'P' (1-based character index in the query string)
    internal_position: int | None = None  # 'p'
    internal_query: str | None = None  # 'q'
    where: str | None = None  # 'W'
    schema: str | None = None  # 's'
    table: str | None = None  # 't'
    column: str | None = None  # 'c'
    data_type: str | None = None  # 'd'
    constraint: str | None = None  # 'n'
    file: str | None = None  # 'F'
    line: int | None = None  # 'L'
    routine: str | None = None  # 'R'


@dataclass(frozen=True, slots=True)
class ErrorResponse(_NoticeFields):
    """ErrorResponse (B) 'E': pairs of Byte1 field code and String value, then a NUL byte
    (protocol-error-fields)."""


@dataclass(frozen=True, slots=True)
class NoticeResponse(_NoticeFields):
    """NoticeResponse (B) 'N': same layout as ErrorResponse."""


@dataclass(frozen=True, slots=True)
class FunctionCallResponse:
    """FunctionCallResponse (B) 'V': Int32 result length (-1 = NULL), Byte n result (not kept)."""

    length: int


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    """NegotiateProtocolVersion (B) 'v': Int32 newest protocol version the server supports for
    the requested major version, Int32 N, String[N] protocol options it did not recognize."""

    newest_version: int
    unrecognized_options: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    """NotificationResponse (B) 'A': Int32 notifying backend pid, String channel, String payload
    (only its length is kept)."""

    process_id: int
    channel: str
    payload_length: int


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    """ParameterDescription (B) 't': Int16 N, Int32[N] parameter type OIDs."""

    type_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    """ParameterStatus (B) 'S': String parameter name, String value (server_version,
    client_encoding, application_name, session_authorization, ...)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    """ReadyForQuery (B) 'Z': Byte1 transaction status: 'I' idle, 'T' in a transaction block,
    'E' in a failed transaction block."""

    status: str


@dataclass(frozen=True, slots=True)
class FieldDescription:
    """One field of a RowDescription."""

    name: str
    table_oid: int
    column_number: int
    type_oid: int
    type_size: int
    type_modifier: int
    format: int


@dataclass(frozen=True, slots=True)
class RowDescription:
    """RowDescription (B) 'T': Int16 N fields, per field: String name, Int32 table OID (or 0),
    Int16 column attribute number (or 0), Int32 type OID, Int16 type size, Int32 type modifier,
    Int16 format code."""

    fields: tuple[FieldDescription, ...]


FrontendMessage = Union[Query, Parse, Bind, Describe, Execute, Close, Sync, Flush, Terminate,
                        CopyData, CopyDone, CopyFail, FunctionCall, PasswordMessage]
StartupPacket = Union[StartupMessage, SSLRequest, GSSENCRequest, CancelRequest]
BackendMessage = Union[
    AuthenticationOk, AuthenticationKerberosV5, AuthenticationCleartextPassword,
    AuthenticationMD5Password, AuthenticationSCMCredential, AuthenticationGSS,
    AuthenticationGSSContinue, AuthenticationSSPI, AuthenticationSASL,
    AuthenticationSASLContinue, AuthenticationSASLFinal, BackendKeyData, BindComplete,
    CloseComplete, ParseComplete, NoData, EmptyQueryResponse, PortalSuspended, CommandComplete,
    CopyInResponse, CopyOutResponse, CopyBothResponse, CopyData, CopyDone, DataRow,
    ErrorResponse, NoticeResponse, FunctionCallResponse, NegotiateProtocolVersion,
    NotificationResponse, ParameterDescription, ParameterStatus, ReadyForQuery, RowDescription]


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_startup(body: bytes) -> StartupPacket:
    """Parse an untagged startup packet; `body` is everything after its Int32 length."""
    r = _Reader(body)
    code = r.uint32()
    if code == StartupCode.SSLRequest:
        r.done()
        return SSLRequest()
    if code == StartupCode.GSSENCRequest:
        r.done()
        return GSSENCRequest()
    if code == StartupCode.CancelRequest:
        pid = r.int32()
        klen = r.remaining()
        if not 4 <= klen <= 256:
            raise ProtocolError(f"CancelRequest secret key of {klen} bytes")
        return CancelRequest(pid, klen)
    if code >> 16 != PROTOCOL_3_0 >> 16:
        raise ProtocolError(f"unsupported startup code/protocol version {code}")
    return StartupMessage(code, parse_startup_parameters(r.b, r.off, r.end))


def parse_startup_parameters(b: bytes | bytearray, off: int, end: int,
                             encoding: str = "utf-8") -> dict[str, str]:
    """The name/value String pairs of a StartupMessage, from `off` to the terminating NUL."""
    params: dict[str, str] = {}
    while off < end and b[off] != 0:
        nul = b.find(b"\0", off, end)
        if nul < 0:
            raise ProtocolError("unterminated StartupMessage parameter name")
        name = b[off:nul].decode(encoding, "replace")
        off = nul + 1
        nul = b.find(b"\0", off, end)
        if nul < 0:
            raise ProtocolError(f"unterminated value of StartupMessage parameter {name!r}")
        params[name] = b[off:nul].decode(encoding, "replace")
        off = nul + 1
    if off >= end:
        raise ProtocolError("StartupMessage lacks its terminating NUL")
    return params


def _formats(r: _Reader) -> tuple[int, ...]:
    n = r.int16()
    if n < 0:
        raise ProtocolError(f"negative format code count {n}")
    return tuple(r.int16() for _ in range(n))


def expand_formats(codes: tuple[int, ...], count: int) -> tuple[int, ...]:
    """Per-parameter format codes: none means all text, one applies to all (Bind, FunctionCall)."""
    if not codes:
        return (0,) * count
    if len(codes) == 1:
        return codes * count
    return codes


def parse_frontend(type_byte: int, body: bytes, *, encoding: str = "utf-8",
                   with_values: bool = False) -> FrontendMessage:
    """Parse one frontend message body (after the type byte and the Int32 length)."""
    r = _Reader(body, encoding)
    t = type_byte
    msg: FrontendMessage
    if t == FrontendType.Query:
        msg = Query(r.cstring())
    elif t == FrontendType.Parse:
        name = r.cstring()
        query = r.cstring()
        n = r.int16()
        if n < 0:
            raise ProtocolError(f"Parse with {n} parameter types")
        msg = Parse(name, query, tuple(r.uint32() for _ in range(n)))
    elif t == FrontendType.Bind:
        portal = r.cstring()
        stmt = r.cstring()
        codes = _formats(r)
        n = r.int16()
        if n < 0 or len(codes) not in (0, 1, n):
            raise ProtocolError(f"Bind with {n} parameters and {len(codes)} format codes")
        values: list[bytes | None] = []
        for _ in range(n):
            ln = r.int32()
            if ln < -1:
                raise ProtocolError(f"Bind parameter length {ln}")
            v = None if ln == -1 else r.raw(ln)
            if with_values:
                values.append(v)
        msg = Bind(portal, stmt, expand_formats(codes, n), n,
                   tuple(values) if with_values else None, _formats(r))
    elif t == FrontendType.Describe or t == FrontendType.Close:
        kind = chr(r.byte())
        if kind not in ("S", "P"):
            raise ProtocolError(f"Describe/Close of kind {kind!r}")
        name = r.cstring()
        msg = Describe(kind, name) if t == FrontendType.Describe else Close(kind, name)
    elif t == FrontendType.Execute:
        msg = Execute(r.cstring(), r.int32())
    elif t == FrontendType.Sync:
        msg = Sync()
    elif t == FrontendType.Flush:
        msg = Flush()
    elif t == FrontendType.Terminate:
        msg = Terminate()
    elif t == FrontendType.CopyData:
        return CopyData(len(body))
    elif t == FrontendType.CopyDone:
        msg = CopyDone()
    elif t == FrontendType.CopyFail:
        msg = CopyFail(r.cstring())
    elif t == FrontendType.FunctionCall:
        oid = r.uint32()
        codes = _formats(r)
        n = r.int16()
        if n < 0 or len(codes) not in (0, 1, n):
            raise ProtocolError(f"FunctionCall with {n} arguments and {len(codes)} format codes")
        for _ in range(n):
            ln = r.int32()
            if ln > 0:
                r.raw(ln)
        msg = FunctionCall(oid, expand_formats(codes, n), n, r.int16())
    elif t == FrontendType.PasswordMessage:
        return PasswordMessage(len(body))
    else:
        raise ProtocolError(f"unknown frontend message type {t!r}")
    r.done()
    return msg


_AUTH_EMPTY: dict[int, type[AuthenticationOk | AuthenticationKerberosV5
                            | AuthenticationCleartextPassword | AuthenticationSCMCredential
                            | AuthenticationGSS | AuthenticationSSPI]] = {
    AuthenticationCode.Ok: AuthenticationOk,
    AuthenticationCode.KerberosV5: AuthenticationKerberosV5,
    AuthenticationCode.CleartextPassword: AuthenticationCleartextPassword,
    AuthenticationCode.SCMCredential: AuthenticationSCMCredential,
    AuthenticationCode.GSS: AuthenticationGSS,
    AuthenticationCode.SSPI: AuthenticationSSPI,
}
_AUTH_DATA: dict[int, type[AuthenticationGSSContinue | AuthenticationSASLContinue
                            | AuthenticationSASLFinal]] = {
    AuthenticationCode.GSSContinue: AuthenticationGSSContinue,
    AuthenticationCode.SASLContinue: AuthenticationSASLContinue,
    AuthenticationCode.SASLFinal: AuthenticationSASLFinal,
}

_NOTICE_STR = {
    ErrorField.SeverityNonLocalized: "severity", ErrorField.Code: "sqlstate",
    ErrorField.Message: "message", ErrorField.Detail: "detail", ErrorField.Hint: "hint",
    ErrorField.InternalQuery: "internal_query", ErrorField.Where: "where",
    ErrorField.SchemaName: "schema", ErrorField.TableName: "table",
    ErrorField.ColumnName: "column", ErrorField.DataTypeName: "data_type",
    ErrorField.ConstraintName: "constraint", ErrorField.File: "file",
    ErrorField.Routine: "routine",
}
_NOTICE_INT = {ErrorField.Position: "position", ErrorField.InternalPosition: "internal_position",
               ErrorField.Line: "line"}


def parse_notice_fields(b: bytes | bytearray, off: int, end: int,
                        encoding: str = "utf-8") -> dict[int, str]:
    """{field code byte: value} of an ErrorResponse/NoticeResponse body, robust to truncation
    (a cut last field is dropped). Fields are read by their code, never by position."""
    fields: dict[int, str] = {}
    while off < end:
        code = b[off]
        if code == 0:
            break
        nul = b.find(b"\0", off + 1, end)
        if nul < 0:
            break
        fields[code] = b[off + 1:nul].decode(encoding, "replace")
        off = nul + 1
    return fields


def _notice(cls: type[ErrorResponse] | type[NoticeResponse], body: bytes,
            encoding: str) -> ErrorResponse | NoticeResponse:
    if not body or body[-1] != 0:
        raise ProtocolError("ErrorResponse/NoticeResponse lacks its terminating NUL")
    raw = parse_notice_fields(body, 0, len(body), encoding)
    kw: dict[str, object] = {}
    names: dict[int, str] = _NOTICE_STR  # type: ignore[assignment]
    int_names: dict[int, str] = _NOTICE_INT  # type: ignore[assignment]
    for code, value in raw.items():
        if code in names:
            kw[names[code]] = value
        elif code in int_names:
            kw[int_names[code]] = int(value) if value.isdigit() else None
    if "severity" not in kw and ErrorField.Severity in raw:
        kw["severity"] = raw[ErrorField.Severity]
    return cls(**kw)  # type: ignore[arg-type]


def parse_backend(type_byte: int, body: bytes, *, encoding: str = "utf-8") -> BackendMessage:
    """Parse one backend message body (after the type byte and the Int32 length)."""
    r = _Reader(body, encoding)
    t = type_byte
    msg: BackendMessage
    if t == BackendType.Authentication:
        code = r.int32()
        if code in _AUTH_EMPTY:
            msg = _AUTH_EMPTY[code]()
        elif code == AuthenticationCode.MD5Password:
            r.raw(4)
            msg = AuthenticationMD5Password()
        elif code in _AUTH_DATA:
            return _AUTH_DATA[code](r.remaining())
        elif code == AuthenticationCode.SASL:
            mechs = []
            while True:
                m = r.cstring()
                if not m:
                    break
                mechs.append(m)
            msg = AuthenticationSASL(tuple(mechs))
        else:
            raise ProtocolError(f"unknown authentication request {code}")
    elif t == BackendType.BackendKeyData:
        pid = r.int32()
        klen = r.remaining()
        if not 4 <= klen <= 256:
            raise ProtocolError(f"BackendKeyData secret key of {klen} bytes")
        return BackendKeyData(pid, klen)
    elif t == BackendType.BindComplete:
        msg = BindComplete()
    elif t == BackendType.CloseComplete:
        msg = CloseComplete()
    elif t == BackendType.ParseComplete:
        msg = ParseComplete()
    elif t == BackendType.NoData:
        msg = NoData()
    elif t == BackendType.EmptyQueryResponse:
        msg = EmptyQueryResponse()
    elif t == BackendType.PortalSuspended:
        msg = PortalSuspended()
    elif t == BackendType.CommandComplete:
        msg = CommandComplete(r.cstring())
    elif t in (BackendType.CopyInResponse, BackendType.CopyOutResponse,
               BackendType.CopyBothResponse):
        fmt = r.byte()
        n = r.int16()
        if n < 0:
            raise ProtocolError(f"COPY response with {n} columns")
        copy_types: dict[int, type[CopyInResponse | CopyOutResponse | CopyBothResponse]] = {
            BackendType.CopyInResponse: CopyInResponse,
            BackendType.CopyOutResponse: CopyOutResponse,
            BackendType.CopyBothResponse: CopyBothResponse}
        cls = copy_types[t]
        msg = cls(fmt, tuple(r.int16() for _ in range(n)))
    elif t == BackendType.CopyData:
        return CopyData(len(body))
    elif t == BackendType.CopyDone:
        msg = CopyDone()
    elif t == BackendType.DataRow:
        n = r.int16()
        if n < 0:
            raise ProtocolError(f"DataRow with {n} columns")
        for _ in range(n):
            ln = r.int32()
            if ln < -1:
                raise ProtocolError(f"DataRow column length {ln}")
            if ln > 0:
                r.raw(ln)
        msg = DataRow(n, len(body))
    elif t == BackendType.ErrorResponse:
        return _notice(ErrorResponse, r.b, encoding)
    elif t == BackendType.NoticeResponse:
        return _notice(NoticeResponse, r.b, encoding)
    elif t == BackendType.FunctionCallResponse:
        ln = r.int32()
        if ln > 0:
            r.raw(ln)
        msg = FunctionCallResponse(ln)
    elif t == BackendType.NegotiateProtocolVersion:
        newest = r.int32()
        n = r.int32()
        if n < 0:
            raise ProtocolError(f"NegotiateProtocolVersion with {n} options")
        msg = NegotiateProtocolVersion(newest, tuple(r.cstring() for _ in range(n)))
    elif t == BackendType.NotificationResponse:
        pid = r.int32()
        channel = r.cstring()
        nul = r.b.find(b"\0", r.off, r.end)
        if nul < 0:
            raise ProtocolError("unterminated NotificationResponse payload")
        plen = nul - r.off
        r.off = nul + 1
        msg = NotificationResponse(pid, channel, plen)
    elif t == BackendType.ParameterDescription:
        n = r.int16()
        if n < 0:
            raise ProtocolError(f"ParameterDescription with {n} parameters")
        msg = ParameterDescription(tuple(r.uint32() for _ in range(n)))
    elif t == BackendType.ParameterStatus:
        msg = ParameterStatus(r.cstring(), r.cstring())
    elif t == BackendType.ReadyForQuery:
        status = chr(r.byte())
        if status not in ("I", "T", "E"):
            raise ProtocolError(f"ReadyForQuery status {status!r}")
        msg = ReadyForQuery(status)
    elif t == BackendType.RowDescription:
        n = r.int16()
        if n < 0:
            raise ProtocolError(f"RowDescription with {n} fields")
        fields = []
        for _ in range(n):
            fields.append(FieldDescription(r.cstring(), r.uint32(), r.int16(), r.uint32(),
                                           r.int16(), r.int32(), r.int16()))
        msg = RowDescription(tuple(fields))
    else:
        raise ProtocolError(f"unknown backend message type {t!r}")
    r.done()
    return msg

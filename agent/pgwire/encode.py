"""Encoders of PostgreSQL protocol 3.0 messages (protocol-message-formats), both directions.

The decoder never needs these; tests, fuzzing and benchmarks build exact byte streams with them,
and tools can use them to replay traffic. Function names are the message names in snake case.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

from agent.pgwire.codes import PROTOCOL_3_0, StartupCode

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def message(type_char: str, body: bytes = b"") -> bytes:
    """Byte1 type, Int32 length (4 + body), body."""
    return type_char.encode("ascii") + _I32.pack(4 + len(body)) + body


def cstr(s: str | bytes) -> bytes:
    return (s.encode() if isinstance(s, str) else s) + b"\0"


# -- frontend ---------------------------------------------------------------------------------


def startup_message(params: Mapping[str, str], version: int = PROTOCOL_3_0) -> bytes:
    body = _I32.pack(version) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return _I32.pack(4 + len(body)) + body


def ssl_request() -> bytes:
    return _I32.pack(8) + _I32.pack(StartupCode.SSLRequest)


def gssenc_request() -> bytes:
    return _I32.pack(8) + _I32.pack(StartupCode.GSSENCRequest)


def cancel_request(pid: int, key: int) -> bytes:
    return _I32.pack(16) + _I32.pack(StartupCode.CancelRequest) + _I32.pack(pid) + _I32.pack(key)


def query(sql: str | bytes) -> bytes:
    return message("Q", cstr(sql))


def parse(name: str, sql: str | bytes, param_types: Sequence[int] = ()) -> bytes:
    return message("P", cstr(name) + cstr(sql) + _I16.pack(len(param_types))
                   + b"".join(struct.pack(">I", t) for t in param_types))


def bind(portal: str, statement: str, params: Sequence[bytes | None] = (),
         formats: Sequence[int] = (), result_formats: Sequence[int] = ()) -> bytes:
    body = cstr(portal) + cstr(statement) + _I16.pack(len(formats))
    body += b"".join(_I16.pack(f) for f in formats) + _I16.pack(len(params))
    for p in params:
        body += _I32.pack(-1) if p is None else _I32.pack(len(p)) + p
    body += _I16.pack(len(result_formats)) + b"".join(_I16.pack(f) for f in result_formats)
    return message("B", body)


def describe(kind: str, name: str = "") -> bytes:
    return message("D", kind.encode() + cstr(name))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return message("E", cstr(portal) + _I32.pack(max_rows))


def sync() -> bytes:
    return message("S")


def flush() -> bytes:
    return message("H")


def close(kind: str, name: str = "") -> bytes:
    return message("C", kind.encode() + cstr(name))


def terminate() -> bytes:
    return message("X")


def copy_data(data: bytes) -> bytes:
    return message("d", data)


def copy_done() -> bytes:
    return message("c")


def copy_fail(reason: str) -> bytes:
    return message("f", cstr(reason))


def function_call(oid: int, args: Sequence[bytes | None] = (), formats: Sequence[int] = (),
                  result_format: int = 0) -> bytes:
    body = struct.pack(">I", oid) + _I16.pack(len(formats))
    body += b"".join(_I16.pack(f) for f in formats) + _I16.pack(len(args))
    for a in args:
        body += _I32.pack(-1) if a is None else _I32.pack(len(a)) + a
    return message("F", body + _I16.pack(result_format))


def password_message(data: bytes) -> bytes:
    return message("p", data)


# -- backend ----------------------------------------------------------------------------------


def authentication(code: int, data: bytes = b"") -> bytes:
    return message("R", _I32.pack(code) + data)


def authentication_ok() -> bytes:
    return authentication(0)


def authentication_sasl(mechanisms: Iterable[str]) -> bytes:
    return authentication(10, b"".join(cstr(m) for m in mechanisms) + b"\0")


def parameter_status(name: str, value: str) -> bytes:
    return message("S", cstr(name) + cstr(value))


def backend_key_data(pid: int, key: int) -> bytes:
    return message("K", _I32.pack(pid) + _I32.pack(key))


def ready_for_query(status: str = "I") -> bytes:
    return message("Z", status.encode())


def row_description(names: Sequence[str], type_oid: int = 23) -> bytes:
    body = _I16.pack(len(names))
    for n in names:
        body += cstr(n) + struct.pack(">IhIhih", 0, 0, type_oid, 4, -1, 0)
    return message("T", body)


def data_row(values: Sequence[bytes | None]) -> bytes:
    body = _I16.pack(len(values))
    for v in values:
        body += _I32.pack(-1) if v is None else _I32.pack(len(v)) + v
    return message("D", body)


def command_complete(tag: str) -> bytes:
    return message("C", cstr(tag))


def _fields(fields: Mapping[str, str]) -> bytes:
    return b"".join(k.encode() + cstr(v) for k, v in fields.items()) + b"\0"


def error_response(fields: Mapping[str, str] | None = None, *, sqlstate: str = "XX000",
                   message_text: str = "error", severity: str = "ERROR") -> bytes:
    """Fields by code letter ({"S": "ERROR", "V": "ERROR", "C": "42P01", "M": "..."})."""
    if fields is None:
        fields = {"S": severity, "V": severity, "C": sqlstate, "M": message_text}
    return message("E", _fields(fields))


def notice_response(fields: Mapping[str, str]) -> bytes:
    return message("N", _fields(fields))


def empty_query_response() -> bytes:
    return message("I")


def parse_complete() -> bytes:
    return message("1")


def bind_complete() -> bytes:
    return message("2")


def close_complete() -> bytes:
    return message("3")


def no_data() -> bytes:
    return message("n")


def portal_suspended() -> bytes:
    return message("s")


def parameter_description(oids: Sequence[int]) -> bytes:
    return message("t", _I16.pack(len(oids)) + b"".join(struct.pack(">I", o) for o in oids))


def _copy_response(t: str, fmt: int, columns: Sequence[int]) -> bytes:
    return message(t, bytes([fmt]) + _I16.pack(len(columns))
                   + b"".join(_I16.pack(c) for c in columns))


def copy_in_response(columns: Sequence[int] = (0,), fmt: int = 0) -> bytes:
    return _copy_response("G", fmt, columns)


def copy_out_response(columns: Sequence[int] = (0,), fmt: int = 0) -> bytes:
    return _copy_response("H", fmt, columns)


def copy_both_response(columns: Sequence[int] = (), fmt: int = 0) -> bytes:
    return _copy_response("W", fmt, columns)


def function_call_response(value: bytes | None) -> bytes:
    return message("V", _I32.pack(-1) if value is None else _I32.pack(len(value)) + value)


def negotiate_protocol_version(newest: int, options: Sequence[str] = ()) -> bytes:
    return message("v", _I32.pack(newest) + _I32.pack(len(options))
                   + b"".join(cstr(o) for o in options))


def notification_response(pid: int, channel: str, payload: str) -> bytes:
    return message("A", _I32.pack(pid) + cstr(channel) + cstr(payload))

"""Decoding and validation of one ingest request body (docs/events.md, schema version 1). No I/O.

`parse_batch(body)` turns the MessagePack body of `POST /v1/ingest` into a `Batch` whose events
are plain dicts holding every key of their type (absent keys become None, unknown keys are
dropped), or raises:

- `MalformedBody` (HTTP 400): not MessagePack, trailing bytes, or not a map;
- `SchemaViolation` (HTTP 422): wrong `schema_version`, a bad `agent` map or `batch_seq`, or an
  event with an unknown `type`, a missing required key or a value of the wrong type. The message
  names the event index and the key, e.g. `event 3 (statement.executed): key 'seq' must be an
  int, got str`; up to ten problems are reported at once.

Values are checked, not echoed back (statement text may be sensitive). Booleans are not ints,
ints must fit PostgreSQL's bigint, and NUL characters in strings (which no SQL text column can
hold) become U+FFFD, as invalid UTF-8 does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

SCHEMA_VERSION = 1
MAX_BODY_BYTES = 16 * 1024 * 1024
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_ERRORS = 10


class IngestError(ValueError):
    """A request body the collector refuses; `status` is the HTTP status to answer with."""

    status = 400


class MalformedBody(IngestError):
    """The body is not a MessagePack map (HTTP 400)."""

    status = 400


class SchemaViolation(IngestError):
    """The body is a map but breaks the event schema (HTTP 422)."""

    status = 422


@dataclass(frozen=True)
class AgentInfo:
    """The batch's `agent` map."""

    agent_id: str
    host: str | None
    boot_id: str | None
    version: str | None


@dataclass(frozen=True)
class Batch:
    """A validated batch: events keep capture order and hold every key of their type."""

    agent: AgentInfo
    batch_seq: int
    events: tuple[dict[str, Any], ...]


class _Bad(Exception):
    """A value failed its check; the argument says what was expected."""


# -- value checks: each returns the (normalized) value or raises _Bad(expected) ----------------

def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("a str")
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _int(value: Any) -> int:
    if type(value) is not int or not _INT64_MIN <= value <= _INT64_MAX:
        raise _Bad("an int (64-bit signed)")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("a bool")
    return value


def _map_of(check: Callable[[Any], Any], what: str) -> Callable[[Any], dict[str, Any]]:
    def check_map(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _Bad(f"a map of str to {what}")
        try:
            return {_str(k): check(v) for k, v in value.items()}
        except _Bad:
            raise _Bad(f"a map of str to {what}") from None
    return check_map


def _array_of(check: Callable[[Any], Any], what: str) -> Callable[[Any], list[Any]]:
    def check_array(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise _Bad(f"an array of {what}")
        try:
            return [check(v) for v in value]
        except _Bad:
            raise _Bad(f"an array of {what}") from None
    return check_array


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


_CLIENT_KEYS: dict[str, Callable[[Any], Any]] = {
    "pid": _int, "uid": _int, "user": _str, "exe": _str, "cmdline": _str, "comm": _str,
    "cgroup": _str, "systemd_unit": _str, "container_id": _str,
}


def _client(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad("a map (pid, uid, user, exe, cmdline, comm, cgroup, systemd_unit, container_id)")
    out: dict[str, Any] = {}
    for key, check in _CLIENT_KEYS.items():
        item = value.get(key)
        try:
            out[key] = None if item is None else check(item)
        except _Bad as e:
            raise _Bad(f"a map whose {key!r} is {e.args[0]}") from None
    return out


# -- the schema: event type -> key -> (check, required) -----------------------------------------

Field = tuple[Callable[[Any], Any], bool]
REQ, OPT = True, False

EVENT_FIELDS: Mapping[str, Mapping[str, Field]] = {
    "session.started": {
        "session_id": (_str, REQ), "backend_pid": (_int, REQ), "backend_start_us": (_int, OPT),
        "user": (_str, OPT), "database": (_str, OPT), "application_name": (_str, OPT),
        "startup_params": (_map_of(_str, "str"), OPT), "protocol_version": (_str, OPT),
        "transport": (_str, OPT), "tls": (_bool, OPT), "client_addr": (_str, OPT),
        "client_port": (_int, OPT), "client": (_client, OPT), "identity_source": (_str, OPT),
        "attached_mid_session": (_bool, OPT), "capture_source": (_str, OPT),
    },
    "session.ended": {
        "session_id": (_str, REQ), "reason": (_str, OPT), "sqlstate": (_str, OPT),
        "message": (_str, OPT), "statements": (_int, OPT), "bytes_in": (_int, OPT),
        "bytes_out": (_int, OPT),
    },
    "statement.executed": {
        "session_id": (_str, REQ), "seq": (_int, REQ), "query_seq": (_int, OPT),
        "duration_us": (_int, OPT), "protocol": (_str, OPT), "statement": (_str, OPT),
        "statement_raw": (_bool, OPT), "fingerprint": (_str, OPT), "statement_name": (_str, OPT),
        "portal": (_str, OPT), "command_tag": (_str, OPT), "rows": (_int, OPT),
        "sqlstate": (_str, OPT), "error_message": (_str, OPT), "error_severity": (_str, OPT),
        "rule": (_str, OPT), "txn_status": (_str, OPT), "param_count": (_int, OPT),
        "param_formats": (_array_of(_int, "int"), OPT),
        "param_values": (_array_of(_optional(_str), "str or nil"), OPT),
        "flags": (_array_of(_str, "str"), OPT),
    },
    "capture.gap": {
        "session_id": (_str, REQ), "direction": (_str, REQ), "bytes": (_int, OPT),
        "reason": (_str, REQ),
    },
    "cancel.requested": {
        "target_backend_pid": (_int, REQ), "session_id": (_str, OPT),
    },
    "session.attested": {
        "session_id": (_str, REQ), "attested": (_bool, OPT), "identity": (_str, OPT),
        "session_user": (_str, OPT), "masked": (_bool, OPT),
        "masked_columns": (_array_of(_str, "str"), OPT), "reason": (_str, OPT),
    },
    "approval": {
        "request_id": (_int, REQ), "event": (_str, REQ), "database": (_str, OPT),
        "status": (_str, OPT), "rule": (_str, OPT), "op": (_str, OPT), "object": (_str, OPT),
        "statement": (_str, OPT), "fingerprint": (_str, OPT), "requester": (_str, OPT),
        "identity": (_str, OPT), "reviewer": (_str, OPT), "rows": (_int, OPT),
        "requester_pid": (_int, OPT), "requester_backend_start_us": (_int, OPT),
        "used_pid": (_int, OPT), "used_backend_start_us": (_int, OPT), "used_at_us": (_int, OPT),
    },
    "agent.stats": {
        "events": (_int, OPT), "statements": (_int, OPT), "sessions": (_int, OPT),
        "drops": (_map_of(_int, "int"), OPT), "spool_bytes": (_int, OPT),
        "spool_batches": (_int, OPT),
    },
}
"""Keys of each event type besides `type` and `ts_us` (both required for every event)."""


def _kind(value: Any) -> str:
    """The MessagePack-level kind of a value, for error messages (never the value itself)."""
    names = {bool: "bool", int: "int", float: "float", str: "str", bytes: "bin",
             list: "array", dict: "map", type(None): "nil"}
    return names.get(type(value), "ext")


# -- entry points --------------------------------------------------------------------------------

def decode_body(body: bytes) -> dict[Any, Any]:
    """Unpack one MessagePack map. Raises MalformedBody."""
    if not body:
        raise MalformedBody("empty body: expected a MessagePack map (see docs/events.md)")
    try:
        obj = msgpack.unpackb(body, raw=False, unicode_errors="replace", strict_map_key=False)
    except msgpack.ExtraData:
        raise MalformedBody("body holds more than one MessagePack object; send one map") from None
    except (ValueError, msgpack.UnpackException, RecursionError) as e:
        raise MalformedBody(f"body is not valid MessagePack ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise MalformedBody(f"body is a MessagePack {_kind(obj)}, expected a map "
                            "(schema_version, agent, batch_seq, events)")
    return obj


def validate_batch(obj: Mapping[Any, Any]) -> Batch:
    """Check a decoded body against schema version 1. Raises SchemaViolation."""
    version = obj.get("schema_version")
    if type(version) is not int:
        raise SchemaViolation(f"batch: key 'schema_version' must be the int {SCHEMA_VERSION}, "
                              f"got {_kind(version)}")
    if version != SCHEMA_VERSION:
        raise SchemaViolation(f"batch: schema_version {version} is not supported; this collector "
                              f"accepts schema_version {SCHEMA_VERSION} (docs/events.md)")
    errors: list[str] = []
    agent = _validate_agent(obj.get("agent"), errors)
    batch_seq = obj.get("batch_seq")
    if type(batch_seq) is not int or not 1 <= batch_seq <= _INT64_MAX:
        errors.append(f"batch: key 'batch_seq' must be an int >= 1, got {_kind(batch_seq)}"
                      + (f" {batch_seq}" if type(batch_seq) is int else ""))
    raw_events = obj.get("events")
    events: list[dict[str, Any]] = []
    if not isinstance(raw_events, list):
        errors.append(f"batch: key 'events' must be an array, got {_kind(raw_events)}")
    else:
        for index, raw in enumerate(raw_events):
            event = _validate_event(index, raw, errors)
            if event is not None:
                events.append(event)
            if len(errors) > _MAX_ERRORS:
                break
    if errors:
        shown = errors[:_MAX_ERRORS]
        more = " (further problems not listed)" if len(errors) > _MAX_ERRORS else ""
        raise SchemaViolation("; ".join(shown) + more)
    assert agent is not None and type(batch_seq) is int
    return Batch(agent, batch_seq, tuple(events))


def parse_batch(body: bytes) -> Batch:
    """`decode_body` then `validate_batch`. Raises MalformedBody or SchemaViolation."""
    return validate_batch(decode_body(body))


def _validate_agent(value: Any, errors: list[str]) -> AgentInfo | None:
    if not isinstance(value, dict):
        errors.append(f"batch: key 'agent' must be a map (agent_id, host, boot_id, version), "
                      f"got {_kind(value)}")
        return None
    agent_id = value.get("agent_id")
    if not isinstance(agent_id, str) or not agent_id.strip() or len(agent_id) > 200:
        errors.append(f"batch: key 'agent.agent_id' must be a non-empty str, got {_kind(agent_id)}")
        return None
    fields: dict[str, str | None] = {}
    for key in ("host", "boot_id", "version"):
        item = value.get(key)
        if item is not None and not isinstance(item, str):
            errors.append(f"batch: key 'agent.{key}' must be a str, got {_kind(item)}")
            return None
        fields[key] = None if item is None else _str(item)
    return AgentInfo(_str(agent_id), fields["host"], fields["boot_id"], fields["version"])


def _validate_event(index: int, raw: Any, errors: list[str]) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        errors.append(f"event {index}: must be a map, got {_kind(raw)}")
        return None
    etype = raw.get("type")
    if not isinstance(etype, str):
        errors.append(f"event {index}: key 'type' must be a str, got {_kind(etype)}")
        return None
    fields = EVENT_FIELDS.get(etype)
    if fields is None:
        errors.append(f"event {index}: unknown type {etype[:60]!r} "
                      f"(schema_version 1 knows {', '.join(EVENT_FIELDS)})")
        return None
    where = f"event {index} ({etype})"
    event: dict[str, Any] = {"type": etype}
    ok = True
    for key, (check, required) in {"ts_us": (_int, REQ), **fields}.items():
        value = raw.get(key)
        if value is None:
            if required:
                errors.append(f"{where}: missing required key {key!r}")
                ok = False
            event[key] = None
            continue
        try:
            event[key] = check(value)
        except _Bad as e:
            errors.append(f"{where}: key {key!r} must be {e.args[0]}, got {_kind(value)}")
            ok = False
    return event if ok else None

"""One captured backend: its decoder, its identity, and the events it produces.

`CapturedSession` owns the pgwire `Connection` of a backend and turns the decoder's records into
the events of docs/events.md (schema v1): `session.started`, `statement.executed`,
`capture.gap`, `cancel.requested`, `session.ended`. Statement text is made PII-safe here
(normalized, constants replaced) unless the agent runs with --capture-raw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.identity import ClientProcess
from agent.pgwire import records as pgr
from agent.pgwire.session import Connection
from agent.redact import Redactor

Event = dict[str, Any]

# pgwarden's own SQLSTATEs (docs/events.md): decisions of the extension, read off the wire.
SQLSTATE_FLAGS = {"PW001": "blocked", "PW002": "approval_required"}
DIRECTIONS = ("frontend", "backend")


def session_id(boot_id: str, pid: int, start_ticks: int) -> str:
    """16 hex digits naming a backend across agent restarts: (boot, pid, process start time)."""
    return hashlib.sha256(f"{boot_id}:{pid}:{start_ticks}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Clock:
    """Converts probe timestamps to wall-clock microseconds since the epoch.

    mono_offset_ns: wall - CLOCK_MONOTONIC (bpf_ktime_get_ns); boot_offset_ns: wall -
    CLOCK_BOOTTIME (bpf_ktime_get_boot_ns, /proc/PID/stat). Refreshed by the agent periodically.
    """

    mono_offset_ns: int
    boot_offset_ns: int

    def mono_us(self, ts_ns: int) -> int:
        return (ts_ns + self.mono_offset_ns) // 1000

    def boot_us(self, boot_ns: int) -> int:
        return (boot_ns + self.boot_offset_ns) // 1000


@dataclass(slots=True)
class SessionFacts:
    """What the agent knows of a backend before decoding a byte of it."""

    pid: int
    gen: int
    session_id: str
    backend_start_us: int
    transport: str  # "tcp" | "unix"
    client_addr: str | None
    client_port: int | None
    client: ClientProcess | None
    identity_source: str | None
    capture_source: str  # "secure_rw" | "syscall"
    mid_session: bool = False
    user: str | None = None  # from the process title, for a mid-session attach
    database: str | None = None


class CapturedSession:
    """Decoder + identity of one backend; `drain()` emits its new events through `emit`."""

    __slots__ = ("facts", "conn", "emit", "redactor", "capture_raw", "clock", "started",
                 "ended", "is_cancel")

    def __init__(self, facts: SessionFacts, emit: Callable[[Event], None], redactor: Redactor,
                 clock: Clock, capture_raw: bool = False) -> None:
        self.facts = facts
        self.conn = Connection(capture_params=capture_raw, mid_session=facts.mid_session,
                                   tls_visible=facts.capture_source == "secure_rw")
        self.emit = emit
        self.redactor = redactor
        self.clock = clock
        self.capture_raw = capture_raw
        self.started = False
        self.ended = False
        self.is_cancel = False

    # -- lifecycle (bytes go straight to self.conn.feed: the capture hot path) ---------------

    def attach_mid_session(self, ts_ns: int) -> None:
        """Announce a backend that was already running when the agent started."""
        self._emit_started(ts_ns, {}, "3.0", None)
        self.drain()

    def close(self, ts_ns: int) -> None:
        """The backend exited: flush the decoder, which ends the session (once)."""
        self.conn.close(ts_ns)
        self.drain()

    def drain(self) -> None:
        for record in self.conn.take_records():
            handler = _HANDLERS.get(type(record))
            if handler is not None:
                handler(self, record)

    # -- records -> events -------------------------------------------------------------------

    def _base(self, kind: str, ts_ns: int) -> Event:
        return {"type": kind, "ts_us": self.clock.mono_us(ts_ns), "session_id": self.facts.session_id}

    def _emit_started(self, ts_ns: int, params: dict[str, str], protocol: str | None,
                      tls: bool | None) -> None:
        f = self.facts
        rest = {k: v for k, v in params.items() if k not in ("user", "database", "application_name")}
        if params:  # a StartupMessage without "database" means the database named like the user
            user, database = params.get("user"), params.get("database") or params.get("user")
        else:
            user, database = f.user, f.database
        event = self._base("session.started", ts_ns)
        event.update(
            backend_pid=f.pid, backend_start_us=f.backend_start_us, user=user, database=database,
            application_name=params.get("application_name"), startup_params=rest,
            protocol_version=protocol, transport=f.transport, tls=tls,
            client_addr=f.client_addr, client_port=f.client_port,
            client=f.client.to_event() if f.client else None, identity_source=f.identity_source,
            attached_mid_session=f.mid_session, capture_source=f.capture_source)
        self.started = True
        self.emit(event)

    def _on_startup(self, r: pgr.StartupInfo) -> None:
        self._emit_started(r.ts_ns, dict(r.params), r.protocol_version, r.tls or r.gssenc)

    def _on_cancel(self, r: pgr.CancelInfo) -> None:
        self.is_cancel = True
        self.emit({"type": "cancel.requested", "ts_us": self.clock.mono_us(r.ts_ns),
                   "target_backend_pid": r.target_pid})

    def _on_statement(self, r: pgr.Statement) -> None:
        start = r.ts_start_ns if r.ts_start_ns is not None else r.ts_end_ns or 0
        if not self.started:
            self._emit_started(start, {}, None, None)
        text = r.text
        if text is None:
            statement = fingerprint = None
        elif self.capture_raw:
            statement, fingerprint = text, self.redactor.fingerprint(text)
        else:
            statement, fingerprint = self.redactor.redact(text)
        end = r.ts_end_ns if r.ts_end_ns is not None else start
        # Keys whose value would be nil are left out (docs/events.md: absent means nil): less
        # to build, pack and send per statement, the agent's hottest path.
        event = {"type": "statement.executed", "ts_us": self.clock.mono_us(start),
                 "session_id": self.facts.session_id, "seq": r.seq, "query_seq": r.query_seq,
                 "duration_us": max(0, (end - start) // 1000), "protocol": r.protocol,
                 "statement": statement, "fingerprint": fingerprint,
                 "command_tag": r.command_tag, "rows": r.rows, "txn_status": r.txn_status}
        if r.statement_name is not None:
            event["statement_name"] = r.statement_name
            event["portal"] = r.portal
        if r.sqlstate is not None:
            event.update(sqlstate=r.sqlstate, error_message=r.error_message,
                         error_severity=r.error_severity)
            if r.sqlstate in SQLSTATE_FLAGS:
                event["rule"] = r.error_constraint
        if r.param_count:
            event["param_count"] = r.param_count
            event["param_formats"] = list(r.param_formats)
            if self.capture_raw and r.param_values is not None:
                event["param_values"] = list(r.param_values)
        flags = r.flag_names if r.flags else []
        if r.sqlstate in SQLSTATE_FLAGS:
            flags.append(SQLSTATE_FLAGS[r.sqlstate])
        if flags:
            event["flags"] = flags
        if self.capture_raw and text is not None:
            event["statement_raw"] = True
        self.emit(event)

    def _on_gap(self, r: pgr.Gap) -> None:
        event = self._base("capture.gap", r.ts_ns)
        event.update(direction=DIRECTIONS[r.direction], bytes=r.bytes, reason=r.reason)
        self.emit(event)

    def _on_end(self, r: pgr.SessionEnd) -> None:
        if self.is_cancel or self.ended:
            return
        if not self.started:
            if not (r.bytes_in or r.bytes_out):
                return  # nothing crossed the socket: not a session worth reporting
            self._emit_started(r.ts_ns, {}, None, None)
        event = self._base("session.ended", r.ts_ns)
        event.update(reason=r.reason, sqlstate=r.sqlstate, message=r.message,
                     statements=r.statements, bytes_in=r.bytes_in, bytes_out=r.bytes_out)
        self.ended = True
        self.emit(event)


_HANDLERS: dict[type, Callable[[CapturedSession, Any], None]] = {
    pgr.StartupInfo: CapturedSession._on_startup,
    pgr.CancelInfo: CapturedSession._on_cancel,
    pgr.Statement: CapturedSession._on_statement,
    pgr.Gap: CapturedSession._on_gap,
    pgr.SessionEnd: CapturedSession._on_end,
}

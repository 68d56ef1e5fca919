"""What the per-connection decoder (`session.Connection`) reports: slots dataclasses, in order.

They are the decoder's output, not events: the agent turns them into the events of
docs/events.md (session.started, statement.executed, capture.gap, session.ended,
cancel.requested), normalizing statement text with `agent.redact` on the way.

Timestamps are those given to `Connection.feed` (the capture clock, nanoseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

FRONTEND = 0  # client -> server bytes (what the backend read)
BACKEND = 1  # server -> client bytes (what the backend wrote)

# Statement.flags bits (names as in docs/events.md `flags`).
UNKNOWN_STATEMENT = 1  # Bind/Execute of a statement whose Parse was never seen (text is None)
SKIPPED = 2  # not run: an earlier message of its batch (or statement of its Query) failed
TRUNCATED = 4  # a capture gap or a size cap hit it: text or result may be partial
INCOMPLETE = 8  # the session ended before its response

FLAG_NAMES = ((UNKNOWN_STATEMENT, "unknown_statement"), (SKIPPED, "skipped"),
              (TRUNCATED, "truncated"), (INCOMPLETE, "incomplete"))


def flag_names(flags: int) -> list[str]:
    """["skipped", "truncated"] for SKIPPED | TRUNCATED: the `flags` array of docs/events.md."""
    return [name for bit, name in FLAG_NAMES if flags & bit]


@dataclass(slots=True)
class StartupInfo:
    """The StartupMessage was decoded. `tls`/`gssenc`: an SSLRequest/GSSENCRequest preceded it
    (with secure_read/secure_write capture the server's one-byte answer is not in the stream,
    so this says the client asked; the plaintext was captured either way)."""

    ts_ns: int
    params: dict[str, str]
    protocol_version: str
    tls: bool = False
    gssenc: bool = False


@dataclass(slots=True)
class CancelInfo:
    """The connection was a CancelRequest for backend `target_pid` (no session follows)."""

    ts_ns: int
    target_pid: int


@dataclass(slots=True)
class Authenticated:
    """AuthenticationOk was sent: the client is logged in."""

    ts_ns: int


@dataclass(slots=True)
class Gap:
    """Bytes the decoder did not see or could not decode in one direction.

    reason: "dropped" (the stream position jumped: the capture lost `bytes`), "mid_session"
    (decoding started on a running session; bytes=0), "desync" (`bytes` were skipped to find a
    message boundary again), "encrypted" (the stream is TLS/GSS ciphertext from here on)."""

    ts_ns: int
    direction: int
    bytes: int
    reason: str


@dataclass(slots=True)
class SessionEnd:
    """The session is over. reason: "terminate" (Terminate message), "disconnect" (the backend
    exited without one), "error" (a FATAL/PANIC ErrorResponse: `sqlstate`, `message`)."""

    ts_ns: int
    reason: str
    sqlstate: str | None = None
    message: str | None = None
    statements: int = 0  # Statement records emitted for this connection
    bytes_in: int = 0  # frontend stream length seen (including gaps)
    bytes_out: int = 0  # backend stream length seen (including gaps)


@dataclass(slots=True)
class Statement:
    """One statement PostgreSQL ran or refused: a statement of a simple Query (a
    multi-statement string gives one per statement), an Execute of the extended protocol, a
    refused Parse/Bind that no Execute followed, or a FunctionCall.

    protocol: "simple", "extended", "function_call", or "unknown" (a response whose request
    was not captured). `text` is the SQL as sent (None when unknown); the agent redacts it.
    `error_*` come from the ErrorResponse fields V/S, C, M, n, s, t, never from the detail
    field (D), which can quote data values."""

    protocol: str
    text: str | None
    ts_start_ns: int | None
    query_seq: int
    statement_name: str | None = None
    portal: str | None = None
    seq: int = 0
    ts_end_ns: int | None = None
    command_tag: str | None = None
    rows: int | None = None
    rows_sent: int = 0
    sqlstate: str | None = None
    error_message: str | None = None
    error_severity: str | None = None
    error_constraint: str | None = None
    error_schema: str | None = None
    error_table: str | None = None
    txn_status: str | None = None
    param_count: int = 0
    param_formats: tuple[int, ...] = ()
    param_values: tuple[str | None, ...] | None = None
    flags: int = 0
    suspended: bool = False  # Execute hit its row limit (PortalSuspended); more Executes follow
    function_oid: int | None = None  # FunctionCall only
    # Where the error came from when it is not the statement's own execution: "parse",
    # "bind", "describe" (the server refused the message preparing it: it never ran), or
    # "commit" (the implicit COMMIT after it failed, e.g. a deferred constraint: it ran).
    error_phase: str | None = None

    @property
    def flag_names(self) -> list[str]:
        return flag_names(self.flags)


Record = StartupInfo | CancelInfo | Authenticated | Gap | SessionEnd | Statement

"""The read side of the store: what `pgwarden sessions`, `session ID` and `statements` show.

Rows come back as plain dicts (JSON-ready: str, int, bool, None, lists, dicts). Times keep their
stored integer form (`ts_us`, `started_us`, ...) and get an ISO 8601 UTC twin with microseconds
(`started_at`, `ended_at`, ...). Everything is sorted by time, oldest first; with a `limit`,
the *latest* `limit` rows are returned (still oldest first), like `tail`.

Statement rows carry the statement's own fields, its session's (user, database, client process,
...), the relations it references (`tables`) and its `flags`. Filters combine with AND:

    user, database          exact match on the session's StartupMessage values
    client_exe              case-insensitive substring of the client executable path
    since_us / until_us     statement start time, since inclusive, until exclusive
    table                   a Relation: `orders` matches any schema; `public.orders` matches
                            public.orders and unqualified `orders` (the search path decides)
    error / sqlstate        statements that failed; a 5-character SQLSTATE or a 2-character class
    sql_like                SQL LIKE pattern on the statement text, case-insensitive (`%`, `_`,
                            backslash escapes)
    session_id              exactly this session
    blocked                 refused by a pgwarden guardrail: flag `blocked` or SQLSTATE PW001
    masked                  run by a session the database masked (session.attested) and
                            referencing a table with masked columns; each such statement
                            lists those columns in `masked_columns` (who saw what, masked)

Errors: StoreUnavailable (from storage), SessionNotFound, AmbiguousSession.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pglast.stream import maybe_double_quote_name
from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, or_, select

from agent.collector import schema
from agent.collector.relations import Relation
from agent.collector.storage import Store
from agent.collector.times import iso_utc

_STREAM_CHUNK = 500
st, se = schema.statements, schema.sessions

# --json field order: the fields a reader looks for first, then everything else stored.
_SESSION_FIELDS_OF_STATEMENT = (
    "backend_pid", "user", "database", "application_name", "client_addr", "client_port",
    "client_pid", "client_exe")
_SESSION_EXTRA_OF_STATEMENT = (
    "client_uid", "client_user", "client_cmdline", "client_comm", "client_cgroup",
    "client_systemd_unit", "client_container_id", "identity_source", "transport", "tls",
    "backend_start_us", "startup_params", "protocol_version", "attached_mid_session",
    "capture_source", "identity", "masked")
_STATEMENT_LEADING = ("protocol", "statement", "fingerprint", "command_tag", "rows", "sqlstate")
_STATEMENT_TRAILING = (
    "seq", "query_seq", "ts_us", "statement_raw", "statement_name", "portal", "error_message",
    "error_severity", "rule", "txn_status", "param_count", "param_formats", "param_values",
    "flags", "agent_id", "batch_seq", "id")


class SessionNotFound(LookupError):
    """No stored session has this id (or id prefix)."""


class AmbiguousSession(LookupError):
    """An id prefix matches several sessions; `candidates` lists some of them."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


@dataclass(frozen=True)
class StatementFilter:
    """Filters of `pgwarden statements` (see the module docstring); None/False = no filter."""

    user: str | None = None
    database: str | None = None
    client_exe: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    table: Relation | None = None
    error: bool = False
    sqlstate: str | None = None
    sql_like: str | None = None
    session_id: str | None = None
    blocked: bool = False
    masked: bool = False


@dataclass(frozen=True)
class SessionFilter:
    """Filters of `pgwarden sessions`; the time window applies to the session's start."""

    user: str | None = None
    database: str | None = None
    client_exe: str | None = None
    since_us: int | None = None
    until_us: int | None = None


@dataclass
class Timeline:
    """One session: its row, and its entries in time order (an iterator over dicts with "kind":
    session.started, statement, gap, cancel, session.ended)."""

    session: dict[str, Any]
    entries: Iterator[dict[str, Any]]


# -- statements ----------------------------------------------------------------------------------

def find_statements(store: Store, flt: StatementFilter = StatementFilter(), *,
                    limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Matching statements, oldest first; with `limit`, the latest `limit` of them."""
    query = _statement_select(flt)
    with store.connect() as conn:
        if limit is not None:
            rows = conn.execute(query.order_by(st.c.ts_us.desc(), st.c.id.desc())
                                .limit(limit)).all()
            chunks: Iterable[Any] = _chunks(list(reversed(rows)), _STREAM_CHUNK)
        else:
            result = conn.execution_options(stream_results=True, yield_per=_STREAM_CHUNK).execute(
                query.order_by(st.c.ts_us, st.c.id))
            chunks = result.partitions()
        for chunk in chunks:
            ids = [row.id for row in chunk]
            tables, masked = _tables_of(conn, ids), _masked_columns_of(conn, ids)
            for row in chunk:
                yield _statement_dict(row._mapping, tables.get(row.id, []),
                                      masked.get(row.id, []))


def count_statements(store: Store, flt: StatementFilter = StatementFilter()) -> int:
    """How many statements match `flt`."""
    query = select(func.count()).select_from(_statement_from()).where(*_statement_conditions(flt))
    with store.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _statement_from() -> Any:
    return st.outerjoin(se, se.c.session_id == st.c.session_id)


def _statement_select(flt: StatementFilter) -> Select[Any]:
    session_cols = [se.c[name] for name in _SESSION_FIELDS_OF_STATEMENT
                    + _SESSION_EXTRA_OF_STATEMENT]
    statement_cols = [st.c[name] for name in ("session_id", *_STATEMENT_LEADING, "duration_us",
                                              *_STATEMENT_TRAILING)]
    return (select(*statement_cols, *session_cols).select_from(_statement_from())
            .where(*_statement_conditions(flt)))


def _statement_conditions(flt: StatementFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if flt.user is not None:
        conds.append(se.c.user == flt.user)
    if flt.database is not None:
        conds.append(se.c.database == flt.database)
    if flt.client_exe:
        conds.append(se.c.client_exe.icontains(flt.client_exe, autoescape=True))
    if flt.since_us is not None:
        conds.append(st.c.ts_us >= flt.since_us)
    if flt.until_us is not None:
        conds.append(st.c.ts_us < flt.until_us)
    if flt.table is not None:
        conds.append(_references(flt.table))
    if flt.error:
        conds.append(st.c.sqlstate.is_not(None))
    if flt.sqlstate:
        code = flt.sqlstate.upper()
        conds.append(st.c.sqlstate.like(f"{code}%") if len(code) == 2 else st.c.sqlstate == code)
    if flt.sql_like is not None:
        conds.append(st.c.statement.ilike(flt.sql_like, escape="\\"))
    if flt.session_id is not None:
        conds.append(st.c.session_id == flt.session_id)
    if flt.blocked:
        flags = schema.statement_flags
        conds.append(or_(
            exists().where(flags.c.statement_id == st.c.id, flags.c.flag == "blocked"),
            st.c.sqlstate == "PW001"))
    if flt.masked:
        t, m = schema.statement_tables, schema.session_masked_columns
        conds.append(exists().where(t.c.statement_id == st.c.id, *_masked_match(t, m)))
    return conds


def _masked_match(t: Any, m: Any) -> list[ColumnElement[bool]]:
    """statement_tables row `t` names the table of masked column `m` of the statement's session:
    same name, and no schema (the search path led to it), the table's schema or one of the
    masking view schemas pgwarden generates for it (pgwarden_mask_<schema>, pgwarden_gate_...)."""
    return [m.c.session_id == st.c.session_id, m.c.relation_name == t.c.relation_name,
            or_(t.c.schema_name.is_(None), t.c.schema_name == m.c.schema_name,
                t.c.schema_name == literal("pgwarden_mask_") + m.c.schema_name,
                t.c.schema_name == literal("pgwarden_gate_") + m.c.schema_name)]


def _masked_columns_of(conn: Any, ids: list[int]) -> dict[int, list[str]]:
    """statement id -> the masked columns (schema.table.column) of the tables it references."""
    if not ids:
        return {}
    t, m = schema.statement_tables, schema.session_masked_columns
    rows = conn.execute(
        select(t.c.statement_id, m.c.schema_name, m.c.relation_name, m.c.column_name)
        .select_from(t.join(st, st.c.id == t.c.statement_id).join(m, and_(*_masked_match(t, m))))
        .where(t.c.statement_id.in_(ids))).all()
    found: dict[int, set[str]] = {}
    for sid, schema_name, relation, column in rows:
        name = f"{Relation(schema_name, relation)}.{maybe_double_quote_name(column)}"
        found.setdefault(sid, set()).add(name)
    return {sid: sorted(names) for sid, names in found.items()}


def _references(relation: Relation) -> ColumnElement[bool]:
    t = schema.statement_tables
    same_name = t.c.relation_name == relation.name
    if relation.schema is not None:
        same_name = and_(same_name, or_(t.c.schema_name == relation.schema,
                                        t.c.schema_name.is_(None)))
    return exists().where(t.c.statement_id == st.c.id, same_name)


def _tables_of(conn: Any, ids: list[int]) -> dict[int, list[str]]:
    if not ids:
        return {}
    t = schema.statement_tables
    rows = conn.execute(select(t.c.statement_id, t.c.schema_name, t.c.relation_name)
                        .where(t.c.statement_id.in_(ids))).all()
    found: dict[int, list[str]] = {}
    for sid, schema_name, name in rows:
        found.setdefault(sid, []).append(str(Relation(schema_name, name)))
    for names in found.values():
        names.sort()
    return found


def _statement_dict(row: Any, tables: list[str], masked: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"session_id": row["session_id"]}
    out.update((k, row[k]) for k in _SESSION_FIELDS_OF_STATEMENT)
    out.update((k, row[k]) for k in _STATEMENT_LEADING)
    out["started_at"] = iso_utc(row["ts_us"])
    out["duration_us"] = row["duration_us"]
    out["tables"] = tables
    out["masked_columns"] = masked
    out.update((k, row[k]) for k in _STATEMENT_TRAILING)
    out["flags"] = out["flags"] or []
    out.update((k, row[k]) for k in _SESSION_EXTRA_OF_STATEMENT)
    return out


# -- sessions ------------------------------------------------------------------------------------

def find_sessions(store: Store, flt: SessionFilter = SessionFilter(), *,
                  limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Matching sessions, oldest start first; with `limit`, the latest `limit` of them."""
    start = _session_start()
    query = select(se).where(*_session_conditions(flt))
    with store.connect() as conn:
        if limit is not None:
            rows = conn.execute(query.order_by(start.desc(), se.c.session_id.desc())
                                .limit(limit)).all()
            yield from (_session_dict(row._mapping) for row in reversed(rows))
            return
        result = conn.execution_options(stream_results=True, yield_per=_STREAM_CHUNK).execute(
            query.order_by(start, se.c.session_id))
        yield from (_session_dict(row._mapping) for row in result)


def count_sessions(store: Store, flt: SessionFilter = SessionFilter()) -> int:
    """How many sessions match `flt`."""
    query = select(func.count()).select_from(se).where(*_session_conditions(flt))
    with store.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _session_start() -> ColumnElement[Any]:
    # A session whose session.started never arrived starts at its first captured event.
    return func.coalesce(se.c.started_us, se.c.first_seen_us)


def _session_conditions(flt: SessionFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if flt.user is not None:
        conds.append(se.c.user == flt.user)
    if flt.database is not None:
        conds.append(se.c.database == flt.database)
    if flt.client_exe:
        conds.append(se.c.client_exe.icontains(flt.client_exe, autoescape=True))
    if flt.since_us is not None:
        conds.append(_session_start() >= flt.since_us)
    if flt.until_us is not None:
        conds.append(_session_start() < flt.until_us)
    return conds


def _session_dict(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["started_at"] = iso_utc(row["started_us"])
    out["ended_at"] = iso_utc(row["ended_us"])
    out["first_seen_at"] = iso_utc(row["first_seen_us"])
    out["last_seen_at"] = iso_utc(row["last_seen_us"])
    start = row["started_us"] if row["started_us"] is not None else row["first_seen_us"]
    out["duration_us"] = None if row["ended_us"] is None else row["ended_us"] - start
    return out


def resolve_session_id(store: Store, id_or_prefix: str) -> str:
    """The full id of the one session whose id is or starts with `id_or_prefix`.

    Raises SessionNotFound, or AmbiguousSession when a prefix matches several sessions.
    """
    exact = id_or_prefix.strip()
    text = exact.lower()
    with store.connect() as conn:
        if exact and conn.execute(select(se.c.session_id).where(se.c.session_id == exact)).first():
            return exact
        if not text:
            raise SessionNotFound("an empty session id matches nothing")
        pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        found = [r[0] for r in conn.execute(
            select(se.c.session_id).where(se.c.session_id.like(pattern, escape="\\"))
            .order_by(se.c.session_id).limit(6))]
    if not found:
        raise SessionNotFound(f"no session {id_or_prefix!r} in the store")
    if len(found) > 1:
        raise AmbiguousSession(f"session id prefix {id_or_prefix!r} matches several sessions",
                               found[:5])
    return str(found[0])


def session_timeline(store: Store, session_id: str) -> Timeline:
    """The session row and its timeline. Raises SessionNotFound.

    Entries (each with kind, ts_us and at = ISO time): session.started, statement (the statement
    fields of `find_statements` without the session's), gap, cancel (a CancelRequest that named
    this session's backend pid while it was open), session.ended. Iterate the entries before
    doing anything else with `store` (they stream from one open read transaction).
    """
    with store.connect() as conn:
        row = conn.execute(select(se).where(se.c.session_id == session_id)).first()
    if row is None:
        raise SessionNotFound(f"no session {session_id!r} in the store")
    session = _session_dict(row._mapping)
    return Timeline(session, _timeline_entries(store, session))


def _timeline_entries(store: Store, session: dict[str, Any]) -> Iterator[dict[str, Any]]:
    sid = session["session_id"]
    start = session["started_us"] if session["started_us"] is not None else session["first_seen_us"]
    end = session["ended_us"]
    marks: list[dict[str, Any]] = []
    if session["started_us"] is not None:
        marks.append({"kind": "session.started", "ts_us": session["started_us"],
                      **{k: session[k] for k in ("user", "database", "application_name",
                                                 "client_addr", "client_port", "client_pid",
                                                 "client_exe", "attached_mid_session")}})
    with store.connect() as conn:
        gaps = [{"kind": "gap", **dict(r._mapping)} for r in conn.execute(
            select(schema.gaps.c.ts_us, schema.gaps.c.direction, schema.gaps.c.bytes,
                   schema.gaps.c.reason, schema.gaps.c.id)
            .where(schema.gaps.c.session_id == sid).order_by(schema.gaps.c.ts_us,
                                                              schema.gaps.c.id))]
        c = schema.cancels
        cancel_window = [c.c.agent_id == session["agent_id"],
                         c.c.target_backend_pid == session["backend_pid"], c.c.ts_us >= start]
        if end is not None:
            cancel_window.append(c.c.ts_us <= end)
        cancels = [] if session["backend_pid"] is None else [
            {"kind": "cancel", "ts_us": r.ts_us, "target_backend_pid": r.target_backend_pid,
             "from_session_id": r.session_id, "id": r.id}
            for r in conn.execute(select(c).where(*cancel_window).order_by(c.c.ts_us, c.c.id))]
    if session.get("attested_us") is not None:
        marks.append({"kind": "session.attested", "ts_us": session["attested_us"],
                      "identity": session["identity"], "masked": session["masked"],
                      "masked_columns": session["masked_columns"] or []})
    if end is not None:
        marks.append({"kind": "session.ended", "ts_us": end, "reason": session["end_reason"],
                      "sqlstate": session["end_sqlstate"], "message": session["end_message"],
                      "statements": session["end_statements"], "bytes_in": session["bytes_in"],
                      "bytes_out": session["bytes_out"]})
    rank = {"session.started": 0, "session.attested": 1, "statement": 1, "gap": 1, "cancel": 1,
            "session.ended": 2}

    def order(entry: dict[str, Any]) -> tuple[int, int]:
        return entry["ts_us"], rank[entry["kind"]]

    marks.sort(key=order)
    session_keys = set(_SESSION_FIELDS_OF_STATEMENT + _SESSION_EXTRA_OF_STATEMENT)
    statements = ({"kind": "statement", **{k: v for k, v in s.items() if k not in session_keys}}
                  for s in find_statements(store, StatementFilter(session_id=sid)))
    runs = _approved_runs(store, session)
    merged = heapq.merge(statements, gaps, cancels, marks, key=order)
    for entry in merged:
        entry["at"] = iso_utc(entry["ts_us"])
        if entry["kind"] == "statement":
            link = _approval_link(store, entry, runs)
            if link:
                entry["approval"] = link
        yield entry


# -- approvals: a statement refused pending approval (PW002) and the run the approval let through

APPROVAL_REQUEST = re.compile(r"approval request (\d+)")
"""How the extension names the request in a PW002 message (docs/approvals.md)."""
_SAME_BACKEND_US = 2_000_000  # PostgreSQL's backend_start vs the agent's process start time


def _approved_runs(store: Store, session: dict[str, Any]) -> list[dict[str, Any]]:
    """'used' approval events of this session's backend: pid, backend start (within
    `_SAME_BACKEND_US`) and database must match."""
    pid, start = session.get("backend_pid"), session.get("backend_start_us")
    if pid is None:
        return []
    a = schema.approval_events
    conds = [a.c.event == "used", a.c.used_pid == pid]
    if start is not None:
        conds += [a.c.used_backend_start_us >= start - _SAME_BACKEND_US,
                  a.c.used_backend_start_us <= start + _SAME_BACKEND_US]
    if session.get("database"):
        conds.append(or_(a.c.database.is_(None), a.c.database == session["database"]))
    with store.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(a).where(*conds).order_by(a.c.used_at_us))]


def _approval_link(store: Store, entry: dict[str, Any],
                   runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """For a PW002 statement: its request, what became of it and the run it allowed; for the
    run an approval let through: its request and where it was refused first."""
    if entry.get("sqlstate") == "PW002":
        m = APPROVAL_REQUEST.search(entry.get("error_message") or "")
        if not m:
            return None
        rid = int(m.group(1))
        with store.connect() as conn:
            events = [dict(r._mapping) for r in conn.execute(
                select(schema.approval_events)
                .where(schema.approval_events.c.request_id == rid)
                .order_by(schema.approval_events.c.ts_us))]
            used = next((e for e in events if e["event"] == "used"), None)
            run = _statement_of_backend(conn, used) if used else None
        last = events[-1] if events else {}
        return {"request_id": rid, "role": "requested", "status": last.get("status"),
                "reviewer": last.get("reviewer"), "approved_run": run}
    for use in runs:
        # the grant was used while this statement ran: the latest one started by then
        if entry["ts_us"] <= use["used_at_us"] <= entry["ts_us"] + (entry["duration_us"] or 0) \
                + _CLOCK_SLACK_US:
            with store.connect() as conn:
                first = conn.execute(
                    select(st.c.session_id, st.c.seq, st.c.ts_us)
                    .where(st.c.sqlstate == "PW002",
                           st.c.error_message.like(f"%approval request {use['request_id']}"))
                    .order_by(st.c.ts_us).limit(1)).first()
            return {"request_id": use["request_id"], "role": "approved_run",
                    "reviewer": use["reviewer"],
                    "requested_in": None if first is None else {
                        "session_id": first.session_id, "seq": first.seq,
                        "at": iso_utc(first.ts_us)}}
    return None


_CLOCK_SLACK_US = 50_000


def _statement_of_backend(conn: Any, used: dict[str, Any]) -> dict[str, Any] | None:
    """The captured statement during which a grant was used (by backend pid and start)."""
    if used.get("used_pid") is None or used.get("used_at_us") is None:
        return None
    conds = [se.c.backend_pid == used["used_pid"]]
    if used.get("used_backend_start_us") is not None:
        conds += [se.c.backend_start_us >= used["used_backend_start_us"] - _SAME_BACKEND_US,
                  se.c.backend_start_us <= used["used_backend_start_us"] + _SAME_BACKEND_US]
    used_at = used["used_at_us"]
    row = conn.execute(
        select(st.c.session_id, st.c.seq, st.c.ts_us).join(se, se.c.session_id == st.c.session_id)
        .where(*conds, st.c.ts_us <= used_at,
               st.c.ts_us + func.coalesce(st.c.duration_us, 0) + _CLOCK_SLACK_US >= used_at)
        .order_by(st.c.ts_us.desc()).limit(1)).first()
    return None if row is None else {"session_id": row.session_id, "seq": row.seq,
                                     "at": iso_utc(row.ts_us)}


def _chunks(rows: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]

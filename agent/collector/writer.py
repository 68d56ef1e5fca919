"""One validated batch -> rows of the collector's tables (schema.py).

Two steps, so that the SQLite write lock is held only for the inserts themselves:

- `prepare(batch, relations, received_us)` is pure: it merges the batch's events per session,
  flattens the client map, parses referenced relations (RelationCache) and builds every row;
- `write(conn, prepared)` runs the inserts and upserts inside the caller's transaction.

Sessions are upserted by session_id: a statement may arrive before its session.started (a
placeholder row holds it), session.started may arrive twice or late, session.ended may come in
another batch. A known value is never replaced by NULL; later non-NULL values win.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Connection, Table, case, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from agent.collector import schema
from agent.collector.ingest import Batch
from agent.collector.relations import Relation, RelationCache, split_qualified_name

_STARTED_KEYS = ("backend_pid", "backend_start_us", "user", "database", "application_name",
                 "startup_params", "protocol_version", "transport", "tls", "client_addr",
                 "client_port", "identity_source", "attached_mid_session", "capture_source")
_ENDED_KEYS = {"reason": "end_reason", "sqlstate": "end_sqlstate", "message": "end_message",
               "statements": "end_statements", "bytes_in": "bytes_in", "bytes_out": "bytes_out"}
_STATEMENT_KEYS = ("session_id", "seq", "query_seq", "ts_us", "duration_us", "protocol",
                   "statement", "statement_raw", "fingerprint", "statement_name", "portal",
                   "command_tag", "rows", "sqlstate", "error_message", "error_severity", "rule",
                   "txn_status", "param_count", "param_formats", "param_values", "flags")
_APPROVAL_KEYS = ("request_id", "event", "database", "status", "rule", "op", "object",
                  "statement", "fingerprint", "requester", "identity", "reviewer", "rows",
                  "requester_pid", "requester_backend_start_us", "used_pid",
                  "used_backend_start_us", "used_at_us")
_SESSION_DATA_COLUMNS = tuple(
    c.name for c in schema.sessions.columns
    if c.name not in ("session_id", "agent_id", "first_seen_us", "last_seen_us",
                      "statements_stored"))


@dataclass
class PreparedBatch:
    """The rows of one batch, ready for `write`."""

    agent: dict[str, Any]
    batch: dict[str, Any]
    sessions: list[dict[str, Any]] = field(default_factory=list)
    statements: list[dict[str, Any]] = field(default_factory=list)
    statement_relations: list[tuple[Relation, ...]] = field(default_factory=list)
    statement_flags: list[tuple[str, ...]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[dict[str, Any]] = field(default_factory=list)
    agent_stats: dict[str, Any] | None = None
    approvals: list[dict[str, Any]] = field(default_factory=list)
    # session_id -> its masked columns (schema, relation, column), from its latest
    # session.attested in the batch; replaces what the store holds for that session
    masked_columns: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)


def prepare(batch: Batch, relations: RelationCache, received_us: int) -> PreparedBatch:
    """Build every row of `batch` (no I/O; the pglast parse happens here)."""
    agent_id = batch.agent.agent_id
    prepared = PreparedBatch(
        agent={"agent_id": agent_id, "host": batch.agent.host, "boot_id": batch.agent.boot_id,
               "version": batch.agent.version, "first_seen_us": received_us,
               "last_seen_us": received_us, "last_batch_seq": batch.batch_seq},
        batch={"agent_id": agent_id, "batch_seq": batch.batch_seq, "received_us": received_us,
               "events": len(batch.events)},
    )
    sessions: dict[str, dict[str, Any]] = {}

    def touch(session_id: str, ts_us: int) -> dict[str, Any]:
        row = sessions.get(session_id)
        if row is None:
            row = sessions[session_id] = {
                "session_id": session_id, "agent_id": agent_id, "first_seen_us": ts_us,
                "last_seen_us": ts_us, "statements_stored": 0,
                **{name: None for name in _SESSION_DATA_COLUMNS}}
        row["first_seen_us"] = min(row["first_seen_us"], ts_us)
        row["last_seen_us"] = max(row["last_seen_us"], ts_us)
        return row

    def merge(row: dict[str, Any], values: dict[str, Any]) -> None:
        row.update((k, v) for k, v in values.items() if v is not None)

    for event in batch.events:
        etype, ts_us = event["type"], event["ts_us"]
        if etype == "session.started":
            client = event["client"] or {}
            merge(touch(event["session_id"], ts_us), {
                "started_us": ts_us, **{k: event[k] for k in _STARTED_KEYS},
                **{f"client_{k}": v for k, v in client.items()}})
        elif etype == "session.ended":
            merge(touch(event["session_id"], ts_us), {
                "ended_us": ts_us, **{col: event[key] for key, col in _ENDED_KEYS.items()}})
        elif etype == "statement.executed":
            touch(event["session_id"], ts_us)["statements_stored"] += 1
            flags = list(dict.fromkeys(event["flags"])) if event["flags"] else None
            prepared.statements.append({"agent_id": agent_id, "batch_seq": batch.batch_seq,
                                        **{k: event[k] for k in _STATEMENT_KEYS}, "flags": flags})
            prepared.statement_relations.append(
                relations.relations(event["statement"], event["fingerprint"]))
            prepared.statement_flags.append(tuple(flags or ()))
        elif etype == "session.attested":
            columns = event["masked_columns"] or []
            merge(touch(event["session_id"], ts_us), {
                "attested_us": ts_us, "identity": event["identity"], "masked": event["masked"],
                "masked_columns": columns if event["masked"] is not None else None})
            if event["masked"] is not None:
                prepared.masked_columns[event["session_id"]] = [
                    parts for parts in (_column_parts(c) for c in columns) if parts]
        elif etype == "capture.gap":
            touch(event["session_id"], ts_us)
            prepared.gaps.append({"agent_id": agent_id, "session_id": event["session_id"],
                                  "ts_us": ts_us, "direction": event["direction"],
                                  "bytes": event["bytes"], "reason": event["reason"]})
        elif etype == "cancel.requested":
            prepared.cancels.append({"agent_id": agent_id, "session_id": event["session_id"],
                                     "ts_us": ts_us,
                                     "target_backend_pid": event["target_backend_pid"]})
        elif etype == "approval":
            prepared.approvals.append({"agent_id": agent_id, "batch_seq": batch.batch_seq,
                                       "ts_us": ts_us, **{k: event[k] for k in _APPROVAL_KEYS}})
        elif etype == "agent.stats":
            latest = prepared.agent_stats
            if latest is None or ts_us >= latest["ts_us"]:
                prepared.agent_stats = {
                    "agent_id": agent_id, "ts_us": ts_us, "received_us": received_us,
                    **{k: event[k] for k in ("events", "statements", "sessions", "drops",
                                             "spool_bytes", "spool_batches")}}
    prepared.sessions = list(sessions.values())
    return prepared


def write(conn: Connection, prepared: PreparedBatch) -> None:
    """Insert/upsert `prepared` in `conn`'s open transaction (the batch row is the caller's)."""
    _upsert_agent(conn, prepared.agent)
    if prepared.sessions:
        _upsert_sessions(conn, prepared.sessions)
    if prepared.statements:
        _insert_statements(conn, prepared)
    if prepared.gaps:
        conn.execute(schema.gaps.insert(), prepared.gaps)
    if prepared.cancels:
        conn.execute(schema.cancels.insert(), prepared.cancels)
    if prepared.agent_stats is not None:
        _upsert_agent_stats(conn, prepared.agent_stats)
    if prepared.approvals:
        _bulk_insert(conn, schema.approval_events, prepared.approvals)
    if prepared.masked_columns:
        t = schema.session_masked_columns
        conn.execute(t.delete().where(t.c.session_id.in_(list(prepared.masked_columns))))
        rows = [{"session_id": sid, "schema_name": s_, "relation_name": r, "column_name": c}
                for sid, cols in prepared.masked_columns.items() for s_, r, c in cols]
        if rows:
            _bulk_insert(conn, t, rows)


def _column_parts(name: str) -> tuple[str, str, str] | None:
    """schema.table.column (SQL quoting) -> its parts; None when it is not one."""
    try:
        parts = split_qualified_name(name)
    except ValueError:
        return None
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def _insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_update` (SQLite and PostgreSQL agree)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _upsert_agent(conn: Connection, row: dict[str, Any]) -> None:
    t = schema.agents
    stmt = _insert(conn, t)
    newer = stmt.excluded.last_batch_seq >= t.c.last_batch_seq
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[t.c.agent_id],
        set_={
            **{name: case((newer, func.coalesce(stmt.excluded[name], t.c[name])), else_=t.c[name])
               for name in ("host", "boot_id", "version")},
            "last_seen_us": stmt.excluded.last_seen_us,
            "last_batch_seq": case((newer, stmt.excluded.last_batch_seq),
                                   else_=t.c.last_batch_seq),
        }), row)


def _upsert_sessions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    t = schema.sessions
    stmt = _insert(conn, t)
    ex = stmt.excluded
    set_: dict[str, Any] = {name: func.coalesce(ex[name], t.c[name])
                            for name in _SESSION_DATA_COLUMNS}
    set_["first_seen_us"] = case((ex.first_seen_us < t.c.first_seen_us, ex.first_seen_us),
                                 else_=t.c.first_seen_us)
    set_["last_seen_us"] = case((ex.last_seen_us > t.c.last_seen_us, ex.last_seen_us),
                                else_=t.c.last_seen_us)
    set_["statements_stored"] = t.c.statements_stored + ex.statements_stored
    conn.execute(stmt.on_conflict_do_update(index_elements=[t.c.session_id], set_=set_), rows)


def _insert_statements(conn: Connection, prepared: PreparedBatch) -> None:
    t = schema.statements
    needs_ids = any(prepared.statement_relations) or any(prepared.statement_flags)
    if not needs_ids:
        _bulk_insert(conn, t, prepared.statements)
        return
    # Ids are allocated up front so the rows go in one executemany (RETURNING would cost one
    # round trip per row on SQLite) and statement_tables/statement_flags can refer to them.
    ids = _allocate_statement_ids(conn, len(prepared.statements))
    _bulk_insert(conn, t, [{"id": sid, **row}
                           for sid, row in zip(ids, prepared.statements, strict=True)])
    relation_rows = [
        {"statement_id": sid, "schema_name": rel.schema, "relation_name": rel.name}
        for sid, rels in zip(ids, prepared.statement_relations, strict=True) for rel in rels]
    flag_rows = [{"statement_id": sid, "flag": flag}
                 for sid, flags in zip(ids, prepared.statement_flags, strict=True)
                 for flag in flags]
    if relation_rows:
        _bulk_insert(conn, schema.statement_tables, relation_rows)
    if flag_rows:
        _bulk_insert(conn, schema.statement_flags, flag_rows)


def _bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT many rows through the driver's executemany, skipping SQLAlchemy's per-row
    parameter processing (the bulk of the ingest cost for statements). JSON columns are
    serialized here the way SQLAlchemy's JSON type would; all rows have the same keys."""
    keys = list(rows[0])
    json_keys = [k for k in keys if isinstance(table.c[k].type, JSON)]
    if json_keys:
        rows = [{**row, **{k: None if row[k] is None else json.dumps(row[k]) for k in json_keys}}
                for row in rows]
    compiled = table.insert().compile(dialect=conn.dialect, column_keys=keys)
    if compiled.positional:
        order = compiled.positiontup or []
        conn.exec_driver_sql(str(compiled), [tuple(row[k] for k in order) for row in rows])
    else:
        conn.exec_driver_sql(str(compiled), rows)


def _allocate_statement_ids(conn: Connection, count: int) -> list[int]:
    """`count` fresh ids for statements.id.

    PostgreSQL: taken from the column's sequence, safe with concurrent writers. SQLite: after
    the current maximum; safe because the caller's transaction holds the database write lock
    (BEGIN IMMEDIATE) until commit, and the column is a rowid alias that never reuses an id
    below the maximum.
    """
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text("SELECT nextval(pg_get_serial_sequence('statements', 'id')) "
                 "FROM generate_series(1, :n)"), {"n": count})
        return [int(r[0]) for r in rows]
    start = int(conn.execute(select(func.coalesce(func.max(schema.statements.c.id), 0)))
                .scalar_one())
    return list(range(start + 1, start + count + 1))


def _upsert_agent_stats(conn: Connection, row: dict[str, Any]) -> None:
    t = schema.agent_stats
    stmt = _insert(conn, t)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[t.c.agent_id],
        set_={name: stmt.excluded[name] for name in row if name != "agent_id"},
        where=stmt.excluded.ts_us >= t.c.ts_us), row)

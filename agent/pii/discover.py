"""Discovery over a live database: list user columns, sample them boundedly, classify each.

``discover(conn)`` takes a psycopg 3 connection (psycopg is imported only here, when called).

* **What is examined:** ordinary tables, partitioned tables (as a whole, not each partition) and
  materialized views outside ``pg_catalog``, ``information_schema``, ``pg_toast*``, temporary
  schemas and pgwarden's own schemas (``pgwarden*``); tables owned by extensions are skipped.
* **What is sampled:** text-like and network columns, and any column whose name announces a class
  its type can hold (``dob date``, ``phone bigint``). Up to ``sample`` non-null values per column,
  each cut to 8 KiB.
* **How much is read:** a table of at most ``max_pages`` pages (default 1024 = 8 MiB) is read
  with ``ORDER BY random() LIMIT``; a larger one through ``TABLESAMPLE SYSTEM (p)`` with p chosen
  so that about ``max_pages`` pages are read, whatever the table's size. One query samples all
  of a table's candidate columns; a column still short of values gets one more bounded query
  with ``WHERE col IS NOT NULL``. Every query runs under ``statement_timeout`` and
  ``lock_timeout`` in its own (sub)transaction; a table that fails (no privilege, timeout, lock)
  is reported as skipped and its columns are still judged by name.
* **Privacy:** sampled values stay in this process's memory for the time of one table and are
  never returned, logged or written; results carry counts and reasons only.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .classify import (
    COMPATIBLE,
    MIN_CONFIDENCE,
    NEVER_EXAMINED,
    Finding,
    assess_column,
    type_family,
)
from .names import match_name

DEFAULT_SAMPLE = 100
DEFAULT_MAX_PAGES = 1024
MAX_VALUE_CHARS = 8192
_ROW_FACTOR = 3  # rows fetched by the joint query per wanted value: room for NULLs

_COLUMNS_SQL = """
SELECT n.nspname, c.relname, c.oid::int8, c.relkind::text, a.attname,
       format_type(a.atttypid, a.atttypmod),
       CASE WHEN t.typtype = 'e' THEN 'enum'
            WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
            ELSE format_type(a.atttypid, a.atttypmod) END,
       has_column_privilege(c.oid, a.attnum, 'SELECT')
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^(pg_toast|pg_temp_|pgwarden)'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
ORDER BY n.nspname, c.relname, a.attnum
"""

_PAGES_SQL = """
SELECT CASE WHEN %(kind)s = 'p'
            THEN (SELECT coalesce(sum(pg_catalog.pg_relation_size(r.relid)), 0)
                  FROM pg_catalog.pg_partition_tree(%(oid)s::oid::regclass) r WHERE r.isleaf)
            ELSE pg_catalog.pg_relation_size(%(oid)s::oid::regclass) END
       / pg_catalog.current_setting('block_size')::int8
"""

_PLAIN_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")


def qualify(*parts: str) -> str:
    """schema.table.column, each part double-quoted as SQL does when it is not a plain
    lower-case identifier (``public."Order Items".email``)."""
    return ".".join(p if _PLAIN_IDENT.match(p) else '"' + p.replace('"', '""') + '"'
                    for p in parts)


@dataclass(frozen=True)
class Progress:
    """Where discovery is: ``table`` is the schema-qualified table being worked on."""

    tables_done: int
    tables_total: int
    columns_done: int
    columns_total: int
    table: str


@dataclass(frozen=True)
class ColumnResult:
    schema: str
    table: str
    column: str
    data_type: str
    finding: Finding | None
    reason: str | None  # why not flagged, or why values were not read
    sampled: int

    @property
    def qualified(self) -> str:
        return qualify(self.schema, self.table, self.column)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"column": self.qualified, "schema": self.schema,
                               "table": self.table, "name": self.column,
                               "data_type": self.data_type, "sampled": self.sampled}
        if self.finding:
            out.update(self.finding.to_dict())
        else:
            out.update({"class": None, "reason": self.reason})
        return out


@dataclass
class Discovery:
    database: str
    started_at: dt.datetime
    tables: int = 0
    columns: list[ColumnResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (schema.table, reason)

    def findings(self, min_confidence: float = MIN_CONFIDENCE) -> list[ColumnResult]:
        return [c for c in self.columns
                if c.finding is not None and c.finding.confidence >= min_confidence]


def suggestions(discovery: Discovery, min_confidence: float = MIN_CONFIDENCE) -> dict[str, Any]:
    """The masking suggestions as plain data: ``{"masking": {"columns": {"s.t.c": {"class",
    "method", "confidence"}}}}``, in discovery order."""
    columns: dict[str, dict[str, Any]] = {}
    for c in discovery.findings(min_confidence):
        assert c.finding is not None
        columns[c.qualified] = {"class": c.finding.pii_class, "method": c.finding.method,
                                "confidence": c.finding.confidence}
    return {"masking": {"columns": columns}}


@dataclass
class _Column:
    schema: str
    table: str
    oid: int
    relkind: str
    name: str
    display_type: str
    data_type: str
    readable: bool

    def wants_values(self) -> bool:
        family = type_family(self.data_type)
        if family in NEVER_EXAMINED or family == "bytea":
            return False
        if family in ("text", "inet", "unknown"):
            return True
        match = match_name(self.name)
        return bool(match and family in COMPATIBLE[match.pii_class])


def _error_text(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag else None
    state = getattr(exc, "sqlstate", None)
    text = primary or type(exc).__name__
    return f"{text} (SQLSTATE {state})" if state else text


def discover(conn: Any, *, schemas: Sequence[str] | None = None, sample: int = DEFAULT_SAMPLE,
             max_pages: int = DEFAULT_MAX_PAGES, statement_timeout_ms: int = 30_000,
             lock_timeout_ms: int = 5_000, progress: Callable[[Progress], None] | None = None,
             today: dt.date | None = None) -> Discovery:
    """Classify every user column of the database `conn` (a psycopg 3 connection) is
    connected to; see the module docstring for what is read. Raises psycopg.Error only when
    the catalog itself cannot be read; per-table failures are recorded in ``skipped``.

    Prefer an autocommit connection (the CLI's): each table is then sampled in its own short
    transaction. In a connection with an open transaction, tables are sampled in savepoints
    and the timeouts set for sampling last until that transaction ends."""
    import psycopg
    from psycopg import sql

    if sample < 1:
        raise ValueError("sample must be at least 1")
    started = dt.datetime.now(dt.UTC)
    with conn.cursor() as cur:
        cur.execute(_COLUMNS_SQL, {"schemas": list(schemas) if schemas else None})
        rows = cur.fetchall()
    tables: dict[tuple[str, str], list[_Column]] = {}
    for row in rows:
        col = _Column(*row)
        tables.setdefault((col.schema, col.table), []).append(col)
    result = Discovery(database=conn.info.dbname, started_at=started, tables=len(tables))
    total_columns = len(rows)
    done_columns = 0

    def report(tables_done: int, table: str) -> None:
        if progress:
            progress(Progress(tables_done, len(tables), done_columns, total_columns, table))

    report(0, "")
    for t_index, ((schema, table), cols) in enumerate(tables.items()):
        label = qualify(schema, table)
        report(t_index, label)
        values: dict[str, list[str]] = {}
        notes: dict[str, str] = {}
        wanted = [c for c in cols if c.wants_values()]
        for c in wanted:
            if not c.readable:
                notes[c.name] = "values not read: no SELECT privilege on the column"
        readable = [c for c in wanted if c.readable]
        if readable:
            try:
                values = _sample_table(conn, psycopg, sql, cols[0], readable, sample, max_pages,
                                       statement_timeout_ms, lock_timeout_ms)
            except psycopg.Error as exc:
                reason = _error_text(exc)
                result.skipped.append((label, reason))
                for c in readable:
                    notes[c.name] = f"values not read: {reason}"
        for c in cols:
            assessment = assess_column(c.name, c.data_type, values.get(c.name, ()), table=table,
                                       today=today)
            values.pop(c.name, None)
            why = assessment.reason
            if c.name in notes:
                why = notes[c.name] + (f"; {why}" if why else "")
            finding = assessment.finding
            if finding is not None and c.name in notes:
                finding = Finding(finding.pii_class, finding.confidence,
                                  (*finding.evidence, notes[c.name]), finding.sampled)
            result.columns.append(ColumnResult(schema, table, c.name, c.display_type, finding,
                                               None if finding else why,
                                               finding.sampled if finding else 0))
            done_columns += 1
            report(t_index, label)
        values.clear()
    report(len(tables), "")
    return result


def _sample_table(conn: Any, psycopg: Any, sql: Any, rel: _Column, cols: list[_Column],
                  sample: int, max_pages: int, statement_timeout_ms: int,
                  lock_timeout_ms: int) -> dict[str, list[str]]:
    """Up to `sample` non-null values (as text) per column of `cols`, reading at most about
    `max_pages` pages of the table."""
    ident = sql.Identifier(rel.schema, rel.table)
    out: dict[str, list[str]] = {c.name: [] for c in cols}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_catalog.set_config('statement_timeout', %s, true), "
                    "pg_catalog.set_config('lock_timeout', %s, true)",
                    (str(statement_timeout_ms), str(lock_timeout_ms)))
        cur.execute(_PAGES_SQL, {"kind": rel.relkind, "oid": rel.oid})
        pages = int(cur.fetchone()[0] or 0)
        if pages > max_pages:
            percent = max(100.0 * max_pages / pages, 0.0001)
            source = sql.SQL("{} TABLESAMPLE SYSTEM ({})").format(
                ident, sql.Literal(round(percent, 6)))
        else:
            source = ident

        def text_of(c: _Column) -> Any:
            return sql.SQL("pg_catalog.left({}::text, {})").format(
                sql.Identifier(c.name), sql.Literal(MAX_VALUE_CHARS))

        rows_wanted = sample * _ROW_FACTOR
        query = sql.SQL("SELECT {} FROM {} ORDER BY pg_catalog.random() LIMIT {}").format(
            sql.SQL(", ").join(text_of(c) for c in cols), source, sql.Literal(rows_wanted))
        cur.execute(query)
        rows = cur.fetchall()
        for row in rows:
            for c, value in zip(cols, row):
                if value is not None and len(out[c.name]) < sample:
                    out[c.name].append(value)
        if len(rows) < rows_wanted:
            return out  # the whole table (or the whole sample) was seen
        for c in cols:
            if len(out[c.name]) >= sample:
                continue
            query = sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL "
                            "ORDER BY pg_catalog.random() LIMIT {}").format(
                text_of(c), source, sql.Identifier(c.name), sql.Literal(sample))
            cur.execute(query)
            out[c.name] = [r[0] for r in cur.fetchall()]
    return out

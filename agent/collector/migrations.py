"""Numbered migrations that build and upgrade a store to the tables of schema.py.

A store records what was applied in `schema_migrations` (version, name, applied_us).
`migrate(conn)` runs, inside the caller's transaction, every migration newer than the store's
version, in order; run again it does nothing. A store whose version is newer than the last
migration here is refused with `SchemaTooNew` (an older pgwarden must not write to it).

Migrations are frozen once released: each builds its own Table objects (never schema.py's, which
moves on), with SQLAlchemy constructs so the same step works on SQLite and PostgreSQL.

To change the schema: write `_m000N_what(conn)`, append `Migration(N, "what", _m000N_what)` to
MIGRATIONS, make the same change in schema.py, and run tests/test_collector_migrations.py, which
compares a freshly migrated store with schema.py on both backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    inspect,
    select,
    text,
)

from agent.collector.errors import SchemaTooNew
from agent.collector.times import now_us

# pg_advisory_xact_lock key: two collectors opening one PostgreSQL store migrate one at a time.
_PG_MIGRATION_LOCK = 0x7067_7761_7264_656E  # "pgwarden"


@dataclass(frozen=True)
class Migration:
    """One schema step: `apply(conn)` runs inside the migration transaction."""

    version: int
    name: str
    apply: Callable[[Connection], None]


def _migrations_table(metadata: MetaData) -> Table:
    # The bootstrap table: its shape never changes.
    return Table(
        "schema_migrations", metadata,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("name", Text, nullable=False),
        Column("applied_us", BigInteger, nullable=False),
    )


def _m0001_initial(conn: Connection) -> None:
    """Agents, batches, sessions, statements (+ relations, flags), gaps, cancels, agent stats."""
    md = MetaData()
    id_type = BigInteger().with_variant(Integer(), "sqlite")
    json = JSON(none_as_null=True)
    Table("agents", md,
          Column("agent_id", Text, primary_key=True), Column("host", Text),
          Column("boot_id", Text), Column("version", Text),
          Column("first_seen_us", BigInteger, nullable=False),
          Column("last_seen_us", BigInteger, nullable=False),
          Column("last_batch_seq", BigInteger, nullable=False))
    Table("ingested_batches", md,
          Column("agent_id", Text, nullable=False), Column("batch_seq", BigInteger, nullable=False),
          Column("received_us", BigInteger, nullable=False),
          Column("events", Integer, nullable=False),
          PrimaryKeyConstraint("agent_id", "batch_seq", name="ingested_batches_pkey"))
    Table("sessions", md,
          Column("session_id", Text, primary_key=True), Column("agent_id", Text, nullable=False),
          Column("started_us", BigInteger), Column("backend_pid", BigInteger),
          Column("backend_start_us", BigInteger), Column("user", Text), Column("database", Text),
          Column("application_name", Text), Column("startup_params", json),
          Column("protocol_version", Text), Column("transport", Text), Column("tls", Boolean),
          Column("client_addr", Text), Column("client_port", Integer),
          Column("client_pid", BigInteger), Column("client_uid", BigInteger),
          Column("client_user", Text), Column("client_exe", Text), Column("client_cmdline", Text),
          Column("client_comm", Text), Column("client_cgroup", Text),
          Column("client_systemd_unit", Text), Column("client_container_id", Text),
          Column("identity_source", Text), Column("attached_mid_session", Boolean),
          Column("capture_source", Text),
          Column("ended_us", BigInteger), Column("end_reason", Text),
          Column("end_sqlstate", Text), Column("end_message", Text),
          Column("end_statements", BigInteger), Column("bytes_in", BigInteger),
          Column("bytes_out", BigInteger),
          Column("first_seen_us", BigInteger, nullable=False),
          Column("last_seen_us", BigInteger, nullable=False),
          Column("statements_stored", BigInteger, nullable=False, server_default="0"),
          Index("sessions_started_idx", "started_us"), Index("sessions_user_idx", "user"),
          Index("sessions_database_idx", "database"),
          Index("sessions_client_exe_idx", "client_exe"))
    Table("statements", md,
          Column("id", id_type, primary_key=True, autoincrement=True),
          Column("agent_id", Text, nullable=False), Column("batch_seq", BigInteger, nullable=False),
          Column("session_id", Text, nullable=False), Column("seq", BigInteger, nullable=False),
          Column("query_seq", BigInteger), Column("ts_us", BigInteger, nullable=False),
          Column("duration_us", BigInteger), Column("protocol", Text), Column("statement", Text),
          Column("statement_raw", Boolean), Column("fingerprint", Text),
          Column("statement_name", Text), Column("portal", Text), Column("command_tag", Text),
          Column("rows", BigInteger), Column("sqlstate", Text), Column("error_message", Text),
          Column("error_severity", Text), Column("rule", Text), Column("txn_status", Text),
          Column("param_count", Integer), Column("param_formats", json),
          Column("param_values", json), Column("flags", json),
          Index("statements_ts_idx", "ts_us"),
          Index("statements_session_idx", "session_id", "seq"),
          Index("statements_sqlstate_idx", "sqlstate", sqlite_where=text("sqlstate IS NOT NULL"),
                postgresql_where=text("sqlstate IS NOT NULL")))
    Table("statement_tables", md,
          Column("statement_id", BigInteger, nullable=False), Column("schema_name", Text),
          Column("relation_name", Text, nullable=False),
          Index("statement_tables_statement_idx", "statement_id"),
          Index("statement_tables_relation_idx", "relation_name", "schema_name"))
    Table("statement_flags", md,
          Column("statement_id", BigInteger, nullable=False), Column("flag", Text, nullable=False),
          PrimaryKeyConstraint("statement_id", "flag", name="statement_flags_pkey"),
          Index("statement_flags_flag_idx", "flag", "statement_id"))
    Table("gaps", md,
          Column("id", id_type, primary_key=True, autoincrement=True),
          Column("agent_id", Text, nullable=False), Column("session_id", Text, nullable=False),
          Column("ts_us", BigInteger, nullable=False), Column("direction", Text, nullable=False),
          Column("bytes", BigInteger), Column("reason", Text, nullable=False),
          Index("gaps_session_idx", "session_id", "ts_us"))
    Table("cancels", md,
          Column("id", id_type, primary_key=True, autoincrement=True),
          Column("agent_id", Text, nullable=False), Column("session_id", Text),
          Column("ts_us", BigInteger, nullable=False),
          Column("target_backend_pid", BigInteger, nullable=False),
          Index("cancels_target_idx", "agent_id", "target_backend_pid", "ts_us"))
    Table("agent_stats", md,
          Column("agent_id", Text, primary_key=True), Column("ts_us", BigInteger, nullable=False),
          Column("events", BigInteger), Column("statements", BigInteger),
          Column("sessions", BigInteger), Column("drops", json),
          Column("spool_bytes", BigInteger), Column("spool_batches", BigInteger),
          Column("received_us", BigInteger, nullable=False))
    md.create_all(conn)


def _m0002_masking(conn: Connection) -> None:
    """session.attested: identity and masking decision on sessions, masked columns per session."""
    quote = conn.dialect.identifier_preparer.quote
    for name, type_ in (("attested_us", BigInteger()), ("identity", Text()),
                        ("masked", Boolean()), ("masked_columns", JSON(none_as_null=True))):
        conn.execute(text(f"ALTER TABLE sessions ADD COLUMN {quote(name)} "
                          f"{type_.compile(dialect=conn.dialect)}"))
    md = MetaData()
    Table("session_masked_columns", md,
          Column("session_id", Text, nullable=False), Column("schema_name", Text, nullable=False),
          Column("relation_name", Text, nullable=False),
          Column("column_name", Text, nullable=False),
          Index("session_masked_columns_session_idx", "session_id"),
          Index("session_masked_columns_relation_idx", "relation_name", "schema_name"))
    md.create_all(conn)


def _m0003_approvals(conn: Connection) -> None:
    """approval events (relayed from the extension's outbox) for the capture link."""
    md = MetaData()
    id_type = BigInteger().with_variant(Integer(), "sqlite")
    Table("approval_events", md,
          Column("id", id_type, primary_key=True, autoincrement=True),
          Column("agent_id", Text, nullable=False),
          Column("batch_seq", BigInteger, nullable=False),
          Column("ts_us", BigInteger, nullable=False),
          Column("request_id", BigInteger, nullable=False),
          Column("event", Text, nullable=False),
          Column("database", Text), Column("status", Text), Column("rule", Text),
          Column("op", Text), Column("object", Text), Column("statement", Text),
          Column("fingerprint", Text), Column("requester", Text), Column("identity", Text),
          Column("reviewer", Text), Column("rows", BigInteger),
          Column("requester_pid", BigInteger), Column("requester_backend_start_us", BigInteger),
          Column("used_pid", BigInteger), Column("used_backend_start_us", BigInteger),
          Column("used_at_us", BigInteger),
          Index("approval_events_request_idx", "request_id", "ts_us"),
          Index("approval_events_used_idx", "used_pid", "used_at_us"))
    md.create_all(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _m0001_initial),
    Migration(2, "masking decisions of sessions", _m0002_masking),
    Migration(3, "approval events", _m0003_approvals),
)
LATEST_VERSION = MIGRATIONS[-1].version


def current_version(conn: Connection) -> int | None:
    """The store's schema version; None when it has no `schema_migrations` table (a new store)."""
    if not inspect(conn).has_table("schema_migrations"):
        return None
    table = _migrations_table(MetaData())
    return int(conn.execute(select(func.coalesce(func.max(table.c.version), 0))).scalar_one())


def refuse_newer(version: int) -> None:
    """Raise SchemaTooNew when a store at `version` is newer than this code's migrations."""
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"store schema version {version} is newer than this pgwarden understands "
            f"({LATEST_VERSION}); upgrade pgwarden, or point it at another store")


def migrate(conn: Connection) -> list[Migration]:
    """Apply the pending migrations in `conn`'s transaction; return those applied (in order).

    Raises SchemaTooNew when the store is newer than this code.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    table = _migrations_table(MetaData())
    table.create(conn, checkfirst=True)
    version = current_version(conn) or 0
    refuse_newer(version)
    applied = []
    for migration in MIGRATIONS:
        if migration.version <= version:
            continue
        migration.apply(conn)
        conn.execute(table.insert().values(version=migration.version, name=migration.name,
                                           applied_us=now_us()))
        applied.append(migration)
    return applied

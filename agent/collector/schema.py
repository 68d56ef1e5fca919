"""The collector's tables as the code reads and writes them (SQLAlchemy Core, no ORM).

This is the *current* schema. Stores are built and upgraded only by the numbered migrations in
migrations.py; when you change a table here, add a migration that makes the same change, and
tests/test_collector_migrations.py checks that a migrated store matches these definitions.

Conventions: times are BIGINT microseconds since the Unix epoch, UTC (`*_us`, as on the wire);
durations are microseconds; maps and arrays from events are JSON; a value the agent did not
know is NULL. Column names follow docs/events.md, the client process map is flattened into
`client_*` columns, and session.ended's fields that collide with session.started's are
prefixed `end_`.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets BIGSERIAL.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON(none_as_null=True)

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("applied_us", BigInteger, nullable=False),
)

agents = Table(
    "agents", metadata,
    Column("agent_id", Text, primary_key=True),
    Column("host", Text),
    Column("boot_id", Text),
    Column("version", Text),
    Column("first_seen_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    Column("last_batch_seq", BigInteger, nullable=False),
)

ingested_batches = Table(
    "ingested_batches", metadata,
    Column("agent_id", Text, nullable=False),
    Column("batch_seq", BigInteger, nullable=False),
    Column("received_us", BigInteger, nullable=False),
    Column("events", Integer, nullable=False),
    PrimaryKeyConstraint("agent_id", "batch_seq", name="ingested_batches_pkey"),
)

sessions = Table(
    "sessions", metadata,
    Column("session_id", Text, primary_key=True),
    Column("agent_id", Text, nullable=False),
    # session.started
    Column("started_us", BigInteger),
    Column("backend_pid", BigInteger),
    Column("backend_start_us", BigInteger),
    Column("user", Text),
    Column("database", Text),
    Column("application_name", Text),
    Column("startup_params", Json),
    Column("protocol_version", Text),
    Column("transport", Text),
    Column("tls", Boolean),
    Column("client_addr", Text),
    Column("client_port", Integer),
    Column("client_pid", BigInteger),
    Column("client_uid", BigInteger),
    Column("client_user", Text),
    Column("client_exe", Text),
    Column("client_cmdline", Text),
    Column("client_comm", Text),
    Column("client_cgroup", Text),
    Column("client_systemd_unit", Text),
    Column("client_container_id", Text),
    Column("identity_source", Text),
    Column("attached_mid_session", Boolean),
    Column("capture_source", Text),
    # session.ended
    Column("ended_us", BigInteger),
    Column("end_reason", Text),
    Column("end_sqlstate", Text),
    Column("end_message", Text),
    Column("end_statements", BigInteger),
    Column("bytes_in", BigInteger),
    Column("bytes_out", BigInteger),
    # kept by the collector: any event of the session counts
    Column("first_seen_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    Column("statements_stored", BigInteger, nullable=False, server_default="0"),
    # session.attested (migration 2): what the database decided for this backend
    Column("attested_us", BigInteger),
    Column("identity", Text),
    Column("masked", Boolean),
    Column("masked_columns", Json),
    Index("sessions_started_idx", "started_us"),
    Index("sessions_user_idx", "user"),
    Index("sessions_database_idx", "database"),
    Index("sessions_client_exe_idx", "client_exe"),
)

statements = Table(
    "statements", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("agent_id", Text, nullable=False),
    Column("batch_seq", BigInteger, nullable=False),
    Column("session_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("query_seq", BigInteger),
    Column("ts_us", BigInteger, nullable=False),
    Column("duration_us", BigInteger),
    Column("protocol", Text),
    Column("statement", Text),
    Column("statement_raw", Boolean),
    Column("fingerprint", Text),
    Column("statement_name", Text),
    Column("portal", Text),
    Column("command_tag", Text),
    Column("rows", BigInteger),
    Column("sqlstate", Text),
    Column("error_message", Text),
    Column("error_severity", Text),
    Column("rule", Text),
    Column("txn_status", Text),
    Column("param_count", Integer),
    Column("param_formats", Json),
    Column("param_values", Json),
    Column("flags", Json),
    Index("statements_ts_idx", "ts_us"),
    Index("statements_session_idx", "session_id", "seq"),
    # Partial: most statements succeed, and only failed ones are searched by SQLSTATE.
    Index("statements_sqlstate_idx", "sqlstate", sqlite_where=text("sqlstate IS NOT NULL"),
          postgresql_where=text("sqlstate IS NOT NULL")),
)

statement_tables = Table(
    "statement_tables", metadata,
    Column("statement_id", BigInteger, nullable=False),
    Column("schema_name", Text),  # NULL: the statement did not qualify the name
    Column("relation_name", Text, nullable=False),
    Index("statement_tables_statement_idx", "statement_id"),
    Index("statement_tables_relation_idx", "relation_name", "schema_name"),
)

session_masked_columns = Table(
    "session_masked_columns", metadata,
    Column("session_id", Text, nullable=False),
    Column("schema_name", Text, nullable=False),
    Column("relation_name", Text, nullable=False),
    Column("column_name", Text, nullable=False),
    Index("session_masked_columns_session_idx", "session_id"),
    Index("session_masked_columns_relation_idx", "relation_name", "schema_name"),
)
"""The columns masked for a session (session.attested), one row each, for --masked."""

statement_flags = Table(
    "statement_flags", metadata,
    Column("statement_id", BigInteger, nullable=False),
    Column("flag", Text, nullable=False),
    PrimaryKeyConstraint("statement_id", "flag", name="statement_flags_pkey"),
    Index("statement_flags_flag_idx", "flag", "statement_id"),
)

approval_events = Table(
    "approval_events", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("agent_id", Text, nullable=False),
    Column("batch_seq", BigInteger, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("request_id", BigInteger, nullable=False),
    Column("event", Text, nullable=False),
    Column("database", Text), Column("status", Text), Column("rule", Text), Column("op", Text),
    Column("object", Text), Column("statement", Text), Column("fingerprint", Text),
    Column("requester", Text), Column("identity", Text), Column("reviewer", Text),
    Column("rows", BigInteger),
    Column("requester_pid", BigInteger), Column("requester_backend_start_us", BigInteger),
    Column("used_pid", BigInteger), Column("used_backend_start_us", BigInteger),
    Column("used_at_us", BigInteger),
    Index("approval_events_request_idx", "request_id", "ts_us"),
    Index("approval_events_used_idx", "used_pid", "used_at_us"),
)
"""Approval events relayed by `pgwarden notify run --collector` (docs/events.md, `approval`):
they link a statement refused pending approval (PW002) with the run the approval let through."""

gaps = Table(
    "gaps", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("agent_id", Text, nullable=False),
    Column("session_id", Text, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("direction", Text, nullable=False),
    Column("bytes", BigInteger),
    Column("reason", Text, nullable=False),
    Index("gaps_session_idx", "session_id", "ts_us"),
)

cancels = Table(
    "cancels", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("agent_id", Text, nullable=False),
    Column("session_id", Text),
    Column("ts_us", BigInteger, nullable=False),
    Column("target_backend_pid", BigInteger, nullable=False),
    Index("cancels_target_idx", "agent_id", "target_backend_pid", "ts_us"),
)

agent_stats = Table(
    "agent_stats", metadata,
    Column("agent_id", Text, primary_key=True),
    Column("ts_us", BigInteger, nullable=False),
    Column("events", BigInteger),
    Column("statements", BigInteger),
    Column("sessions", BigInteger),
    Column("drops", Json),
    Column("spool_bytes", BigInteger),
    Column("spool_batches", BigInteger),
    Column("received_us", BigInteger, nullable=False),
)

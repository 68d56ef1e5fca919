"""The collector's store: a SQLite file (the default, zero setup) or a PostgreSQL database.

`open_store(location)` takes what the user typed after `--store`: a file path (or `sqlite:///`
URL) or a `postgresql://` / `postgres://` URL (driven by psycopg 3). It connects, checks the
schema version and, unless told otherwise, applies pending migrations in one transaction.

SQLite runs in WAL mode (readers never block the collector's writes) with a 30 s busy timeout;
the collector's write transactions start with BEGIN IMMEDIATE so concurrent batches queue for
the write lock instead of failing on a read-to-write upgrade.

`Store.write_batch(batch)` stores one validated batch in one transaction: all of it or none.
A batch whose (agent_id, batch_seq) is already stored is acknowledged as a duplicate and not
stored again. Read-side code (query.py) uses `Store.connect()`.

Errors (agent/collector/errors.py): StoreMissing, StoreUnavailable, SchemaTooNew, SchemaTooOld.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, make_url, select
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)

from agent.collector import migrations, schema, writer
from agent.collector.errors import (
    SchemaTooOld,
    StoreError,
    StoreMissing,
    StoreUnavailable,
)
from agent.collector.ingest import Batch
from agent.collector.relations import RelationCache
from agent.collector.times import now_us

_SQLITE_BUSY_TIMEOUT_MS = 30_000
_PG_CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class WriteResult:
    """What `write_batch` did: `accepted` events stored (0 for a duplicate)."""

    accepted: int
    duplicate: bool


class _Duplicate(Exception):
    """The batch is already stored; unwinds the transaction."""


def store_url(location: str) -> URL:
    """The SQLAlchemy URL for a `--store` value. Raises StoreError for unsupported URLs."""
    if "://" not in location:
        path = Path(location).expanduser().absolute()
        return URL.create("sqlite", database=str(path))
    try:
        url = make_url(location)
    except ArgumentError as e:
        raise StoreError(f"{location!r} is not a valid store URL: {e}") from None
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if url.drivername == "sqlite" and url.database:
        return url.set(database=str(Path(url.database).expanduser().absolute()))
    raise StoreError(f"unsupported store {url.drivername!r}: use a SQLite file path or a "
                     "postgresql://user@host/db URL")


def describe_url(url: URL) -> tuple[str, str]:
    """(kind, location) for messages: ("sqlite", "/path/db") or ("postgresql", URL, no password)."""
    if url.get_backend_name() == "sqlite":
        return "sqlite", str(url.database)
    shown = url.set(drivername="postgresql").render_as_string(hide_password=True)
    return "postgresql", shown


class Store:
    """An open, schema-checked store. Close it (or use `with`) to release connections."""

    def __init__(self, engine: Engine, kind: str, location: str, schema_version: int) -> None:
        self.engine = engine
        self.kind = kind
        self.location = location
        self.schema_version = schema_version
        self._relations = RelationCache()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __str__(self) -> str:
        return f"{self.kind} {self.location}"

    def close(self) -> None:
        """Dispose of the connection pool."""
        self.engine.dispose()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection in a read transaction. Raises StoreUnavailable when unreachable."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except DBAPIError as e:
            raise StoreUnavailable(f"{self}: {_reason(e)}") from None

    def ping(self) -> None:
        """Check that the store answers. Raises StoreUnavailable."""
        with self.connect() as conn:
            conn.execute(select(1)).scalar_one()

    def write_batch(self, batch: Batch, *, received_us: int | None = None) -> WriteResult:
        """Store `batch` atomically. Raises StoreUnavailable (retry later) or StoreError."""
        received = now_us() if received_us is None else received_us
        prepared = writer.prepare(batch, self._relations, received)
        key = {"agent_id": batch.agent.agent_id, "batch_seq": batch.batch_seq}
        t = schema.ingested_batches
        try:
            with self.engine.connect() as conn:
                conn.execution_options(sqlite_begin="IMMEDIATE")
                with conn.begin():
                    seen = conn.execute(select(t.c.batch_seq).where(
                        t.c.agent_id == key["agent_id"], t.c.batch_seq == key["batch_seq"]))
                    if seen.first() is not None:
                        raise _Duplicate
                    try:
                        conn.execute(t.insert(), prepared.batch)
                    except IntegrityError:  # the same batch, committed by a concurrent request
                        raise _Duplicate from None
                    writer.write(conn, prepared)
        except _Duplicate:
            return WriteResult(0, True)
        except DBAPIError as e:
            if e.connection_invalidated or isinstance(e, OperationalError):
                raise StoreUnavailable(f"{self}: {_reason(e)}") from None
            raise StoreError(f"{self}: {_reason(e)}") from None
        except SQLAlchemyError as e:
            raise StoreError(f"{self}: {e}") from None
        return WriteResult(len(batch.events), False)


def open_store(location: str, *, create: bool = False, migrate: bool = True) -> Store:
    """Open the store at `location` (path or URL).

    create: a missing SQLite file (mode 0600, and its directory, 0700) is created; otherwise
        StoreMissing.
    migrate: pending migrations are applied (the collector); otherwise a store that needs them
    raises SchemaTooOld (the read-only query commands). A store newer than this code raises
    SchemaTooNew either way; an unreachable one StoreUnavailable.
    """
    url = store_url(location)
    kind, shown = describe_url(url)
    if kind == "sqlite":
        path = Path(str(url.database))
        if not path.exists():
            if not create:
                raise StoreMissing(f"no pgwarden store at {path} (the collector creates it; "
                                   "check --store or the config file)")
            try:
                # Audit data: readable by the collector's user only (SQLite gives its -wal and
                # -shm files the database file's mode).
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass
            except OSError as e:
                raise StoreUnavailable(f"cannot create {path}: {e.strerror}") from None
        elif path.is_dir():
            raise StoreUnavailable(f"{path} is a directory, not a SQLite store file")
    engine = _engine(url)
    try:
        version = _check_schema(engine, kind, shown, migrate)
    except StoreError:
        engine.dispose()
        raise
    except DBAPIError as e:
        engine.dispose()
        raise StoreUnavailable(f"cannot open {kind} store {shown}: {_reason(e)}") from None
    return Store(engine, kind, shown, version)


def _check_schema(engine: Engine, kind: str, shown: str, migrate: bool) -> int:
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE" if migrate else "DEFERRED")
        with conn.begin():
            version = migrations.current_version(conn)
            if version is None:
                ours = [t for t in schema.metadata.tables if inspect(conn).has_table(t)]
                if ours:
                    raise StoreUnavailable(
                        f"{kind} store {shown} has tables named like pgwarden's ({', '.join(ours)})"
                        " but no schema_migrations table: it is not a pgwarden store")
            if migrate:
                migrations.migrate(conn)
                return migrations.LATEST_VERSION
            if version is None:
                raise SchemaTooOld(f"{kind} store {shown} has no pgwarden schema yet; "
                                   "start `pgwarden collector run` on it first")
            migrations.refuse_newer(version)
            if version < migrations.LATEST_VERSION:
                raise SchemaTooOld(
                    f"{kind} store {shown} is at schema version {version}, this pgwarden needs "
                    f"{migrations.LATEST_VERSION}; restart `pgwarden collector run` to migrate it")
            return version


def _engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True,
                             connect_args={"connect_timeout": _PG_CONNECT_TIMEOUT_S})
    engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite would defer BEGIN past DDL (breaking transactional migrations): we emit it.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _reason(error: DBAPIError) -> str:
    """The driver's message, first line only (no SQL, no parameters: they may hold PII)."""
    text = str(error.orig) if error.orig is not None else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__

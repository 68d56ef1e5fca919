"""Store schema versioning: fresh stores, re-opens, refusal of newer stores, transactional
migrations, and a migrated store that matches schema.py (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, inspect, text

from agent.collector import migrations, schema
from agent.collector.errors import SchemaTooNew, SchemaTooOld, StoreMissing, StoreUnavailable
from agent.collector.storage import open_store, store_url
from agent.pgcluster import free_port
from tests.test_collector_process import (
    PGWARDEN,
    STORE_KINDS,
    TOKEN,
    hermetic_env,
    new_store_location,
)


@pytest.fixture(params=STORE_KINDS)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return new_store_location(request, tmp_path)


def _applied(location: str) -> list[tuple[int, str]]:
    with open_store(location, migrate=False) as store, store.connect() as conn:
        return [tuple(r) for r in conn.execute(
            text("SELECT version, name FROM schema_migrations ORDER BY version"))]


def test_migrations_are_numbered_consecutively() -> None:
    versions = [m.version for m in migrations.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))
    assert migrations.MIGRATIONS[-1].version == migrations.LATEST_VERSION


def test_fresh_store_then_reopen_is_idempotent(store_location: str) -> None:
    with open_store(store_location, create=True) as store:
        assert store.schema_version == migrations.LATEST_VERSION
        with store.engine.begin() as conn:
            conn.execute(schema.agents.insert().values(
                agent_id="a", first_seen_us=1, last_seen_us=1, last_batch_seq=1))
    expected = [(m.version, m.name) for m in migrations.MIGRATIONS]
    assert _applied(store_location) == expected
    with open_store(store_location, create=True) as store:  # the collector restarting
        assert store.schema_version == migrations.LATEST_VERSION
        with store.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM agents")).scalar_one() == 1
    assert _applied(store_location) == expected


def test_store_from_a_newer_pgwarden_is_refused(store_location: str, tmp_path: Path) -> None:
    open_store(store_location, create=True).close()
    newer = migrations.LATEST_VERSION + 1
    with open_store(store_location) as store, store.engine.begin() as conn:
        conn.execute(schema.schema_migrations.insert().values(
            version=newer, name="from the future", applied_us=0))
    for kwargs in ({"create": True}, {"migrate": False}):
        with pytest.raises(SchemaTooNew, match=f"store schema version {newer} is newer than this "
                                               f"pgwarden understands"):
            open_store(store_location, **kwargs)  # type: ignore[arg-type]
    env = hermetic_env(tmp_path)
    run = subprocess.run([PGWARDEN, "collector", "run", "--store", store_location, "--token",
                          TOKEN, "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode == 1 and "is newer than this pgwarden" in run.stderr
    query = subprocess.run([PGWARDEN, "statements", "--store", store_location], text=True,
                           capture_output=True, env=env, timeout=60)
    assert query.returncode == 1 and "upgrade pgwarden" in query.stderr
    assert _applied_versions(store_location) == [*range(1, newer + 1)]


def _applied_versions(location: str) -> list[int]:
    """Versions in schema_migrations, read without open_store's version checks."""
    engine = create_engine(store_url(location))
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(
                text("SELECT version FROM schema_migrations ORDER BY version"))]
    finally:
        engine.dispose()


def _table_names(location: str) -> list[str]:
    engine = create_engine(store_url(location))
    try:
        with engine.connect() as conn:
            return inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_a_new_migration_applies_once_and_a_failing_one_leaves_no_trace(
        store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(store_location, create=True).close()

    def add_approvals(conn):  # type: ignore[no-untyped-def]
        Table("approvals", MetaData(), Column("id", Integer, primary_key=True)).create(conn)

    def broken(conn):  # type: ignore[no-untyped-def]
        add_approvals(conn)
        raise RuntimeError("migration bug")

    latest = migrations.LATEST_VERSION
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, migrations.Migration(
        latest + 1, "approvals", broken)))
    monkeypatch.setattr(migrations, "LATEST_VERSION", latest + 1)
    with pytest.raises(RuntimeError, match="migration bug"):
        open_store(store_location)
    assert _applied_versions(store_location)[-1] == latest
    assert "approvals" not in _table_names(store_location)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS[:-1],
                                                   migrations.Migration(latest + 1, "approvals",
                                                                        add_approvals)))
    with open_store(store_location) as store, store.connect() as conn:
        assert store.schema_version == latest + 1
        assert inspect(conn).has_table("approvals")
    with open_store(store_location) as store:  # idempotent: nothing re-applied
        assert store.schema_version == latest + 1
    assert _applied_versions(store_location)[-1] == latest + 1


def test_query_side_refuses_a_store_that_needs_migrating(
        store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(store_location, create=True).close()
    monkeypatch.setattr(migrations, "LATEST_VERSION", migrations.LATEST_VERSION + 1)
    with pytest.raises(SchemaTooOld, match="restart `pgwarden collector run` to migrate it"):
        open_store(store_location, migrate=False)


def test_migrated_store_matches_schema_py(store_location: str) -> None:
    with open_store(store_location, create=True) as store, store.connect() as conn:
        inspector = inspect(conn)
        assert set(inspector.get_table_names()) == set(schema.metadata.tables)
        for name, table in schema.metadata.tables.items():
            columns = inspector.get_columns(name)
            assert [c["name"] for c in columns] == [c.name for c in table.columns], name
            nullable = {c["name"]: c["nullable"] for c in columns}
            for column in table.columns:
                if not column.primary_key:
                    assert nullable[column.name] == column.nullable, (name, column.name)
            pk = inspector.get_pk_constraint(name)["constrained_columns"]
            assert pk == [c.name for c in table.primary_key.columns], name
            indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes(name)}
            assert indexes == {i.name: [c.name for c in i.columns] for i in table.indexes}, name


def test_missing_sqlite_store_is_not_created_by_readers(tmp_path: Path) -> None:
    with pytest.raises(StoreMissing, match="no pgwarden store at"):
        open_store(str(tmp_path / "nope.db"), migrate=False)
    assert not (tmp_path / "nope.db").exists()


def test_a_foreign_database_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE sessions (id integer)")
    with pytest.raises(StoreUnavailable, match="is not a pgwarden store"):
        open_store(str(path), create=True)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(SchemaTooOld, match="no pgwarden schema yet"):
        open_store(str(empty), migrate=False)


def test_unreachable_postgresql_is_store_unavailable() -> None:
    url = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)
    message = str(caught.value)
    assert "cannot open postgresql store" in message and "secret" not in message


def test_new_sqlite_store_is_private_to_the_collector_user(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "collector.db"
    with open_store(str(path), create=True) as store, store.engine.begin() as conn:
        conn.execute(schema.agents.insert().values(agent_id="a", first_seen_us=1,
                                                   last_seen_us=1, last_batch_seq=1))
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    for side in path.parent.glob("collector.db-*"):  # -wal, -shm
        assert side.stat().st_mode & 0o077 == 0, side

"""`pgwarden db install|status|uninstall` on a fresh cluster: files, roles, extension, the
autonomous-write self check, idempotent re-install, clean removal."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.db.install import SQLGLOT_VERSION, extension_version
from agent.pgcluster import PgCluster

pytestmark = pytest.mark.pg


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    c = PgCluster(Path(tempfile.mkdtemp(prefix="pgwarden-install-"))).start()
    yield c
    c.destroy()


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def test_install_status_uninstall(cluster: PgCluster) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE inst")
    dsn = cluster.dsn("inst")
    res = cli("db", "install", "--dsn", dsn, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["version"] == extension_version() and out["sqlglot"] == SQLGLOT_VERSION
    share = Path(out["extension_dir"])
    assert (share / "pgwarden.control").exists()
    assert "@PYTHON_DIR@" not in (share / f"pgwarden--{out['version']}.sql").read_text()
    assert rows(dsn, "SELECT rolname FROM pg_roles WHERE rolname = 'pgwarden_admin'")
    assert rows(dsn, "SELECT extname, extnamespace::regnamespace::text FROM pg_extension"
                     " ORDER BY 1") == [("dblink", "pgwarden_dblink"), ("pgwarden", "pgwarden"),
                                        ("plpgsql", "pg_catalog"), ("plpython3u", "pg_catalog")]
    # the self check wrote the first ledger record through dblink
    [(payload,)] = rows(dsn, "SELECT payload FROM pgwarden.ledger")
    assert json.loads(payload)["kind"] == "installed"

    again = cli("db", "install", "--dsn", dsn)  # idempotent
    assert again.exit_code == 0 and "installed in database inst" in again.output
    status = cli("db", "status", "--dsn", dsn, "--json")
    st = json.loads(status.output)
    assert status.exit_code == 0 and st["installed"] and st["python"]["python"].startswith("3.11")
    assert st["python"]["sqlglot_path"].startswith(str(Path(out["python_dir"])))
    assert st["event_triggers"] == {"pgwarden_ddl_end": "A", "pgwarden_sql_drop": "A",
                                    "pgwarden_table_rewrite": "A", "pgwarden_mask_ddl_start": "A",
                                    "pgwarden_mask_ddl_end": "A", "pgwarden_mask_sql_drop": "A"}
    assert rows(dsn, "SELECT rolname, rolcanlogin, rolsuper FROM pg_roles WHERE rolname IN"
                     " ('pgwarden_agent', 'pgwarden_mask_owner') ORDER BY 1") == [
        ("pgwarden_agent", True, False), ("pgwarden_mask_owner", False, False)]
    assert st["ledger"]["seq"] == 2  # installed twice

    # uninstall drops guard triggers on user tables too
    rows(dsn, "CREATE TABLE t (id int)")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pgwarden.apply_policy(%s::jsonb, '', 'x')", [json.dumps({
            "version": 1, "principals": [], "protect": [{
                "name": "p", "tables": ["public.t"], "schemas": [], "functions": [],
                "columns": [], "rules": {r: "block" for r in (
                    "no_drop", "no_truncate", "require_where", "protected_columns",
                    "opaque_write", "no_rewrite")} | {"max_rows": {
                        "action": "block", "statement": None, "transaction": None,
                        "opaque_statement": None}}}]})])
    assert len(rows(dsn, "SELECT 1 FROM pg_trigger WHERE tgname LIKE 'zz_pgwarden%'")) == 3
    gone = cli("db", "uninstall", "--dsn", dsn, "--yes", "--json")
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.output)["final_head"]["seq"] == 3
    assert rows(dsn, "SELECT extname FROM pg_extension ORDER BY 1") == [("plpgsql",),
                                                                        ("plpython3u",)]
    assert rows(dsn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'zz_pgwarden%'") == [(0,)]
    assert rows(dsn, "SELECT to_regnamespace('pgwarden_dblink')") == [(None,)]
    rows(dsn, "DROP TABLE t")  # no guard left
    missing = cli("db", "status", "--dsn", dsn)
    assert missing.exit_code == 1 and "not installed" in missing.output


def test_install_needs_a_superuser(cluster: PgCluster) -> None:
    rows(cluster.dsn(), "CREATE ROLE plain LOGIN")
    res = cli("db", "install", "--dsn", cluster.dsn(user="plain"))
    assert res.exit_code == 1 and "superuser" in res.output


def test_unreachable_database_is_a_clear_error(cluster: PgCluster) -> None:
    res = cli("db", "status", "--dsn", cluster.dsn("no_such_db"))
    assert res.exit_code == 1 and "cannot connect" in res.output and "no_such_db" in res.output

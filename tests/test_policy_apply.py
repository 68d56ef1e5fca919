"""Policy plan/apply/drift against a real database: plan shows the exact diff, apply is atomic
and idempotent and recorded (hash and git commit), an invalid policy changes nothing, new objects
matching a pattern are guarded automatically, drift finds what weakens enforcement."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.db.testing import TEST_POLICY, GuardedCluster

pytestmark = pytest.mark.pg


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pgwarden.yaml"
    path.write_text(text)
    return path


def state(gc: GuardedCluster, db: str) -> list[tuple]:
    return gc.sql(db, "SELECT classid::regclass::text, identity, protect, via FROM"
                      " pgwarden.protected ORDER BY 1, 2") + \
        gc.sql(db, "SELECT tgrelid::regclass::text, tgname, tgenabled::text, '' FROM pg_trigger"
                   " WHERE tgname LIKE 'zz_pgwarden%' ORDER BY 1, 2") + \
        gc.sql(db, "SELECT 'head', version::text, '', '' FROM pgwarden.policy_head")


def test_plan_shows_the_exact_diff(gc: GuardedCluster, db: str, tmp_path: Path) -> None:
    new = TEST_POLICY.replace("tables: [app.customers, app.orders, app.events, app.big_orders,"
                              " app.invoice_seq]", "tables: [app.customers, app.scratch]") \
        .replace("statement: 500", "statement: 100").replace("columns: [id, api_key]",
                                                             "columns: [api_key]")
    res = cli("policy", "plan", "--dsn", gc.dsn(db), "--file", str(write(tmp_path, new)),
              "--json")
    assert res.exit_code == 0, res.output
    got = {(c["change"], c["kind"], c["object"], c["detail"]) for c in json.loads(res.output)["changes"]}
    assert got == {
        ("~", "policy", "protect core: columns", '["id", "api_key"] -> ["api_key"]'),
        ("~", "policy", "protect core: max_rows.statement", "500 -> 100"),
        ("~", "policy", "protect core: tables",
         '["app.customers", "app.orders", "app.events", "app.big_orders", "app.invoice_seq"]'
         ' -> ["app.customers", "app.scratch"]'),
        ("+", "table", "app.scratch", "protect core (policy)"),
        ("-", "table", "app.orders", "protect core"),
        ("-", "table", "app.events", "protect core"),
        ("-", "table", "app.events_2025", "protect core"),
        ("-", "table", "app.events_2026", "protect core"),
        ("-", "view", "app.big_orders", "protect core"),
        ("-", "sequence", "app.invoice_seq", "protect core"),
        ("-", "column", "app.customers.id", "protected"),
        ("-", "column", "app.orders.id", "protected"),
        ("-", "column", "app.events.id", "protected"),
        ("-", "column", "app.events_2025.id", "protected"),
        ("-", "column", "app.events_2026.id", "protected"),
        ("~", "triggers", "app.customers", "(re)create zz_pgwarden_columns"),
        ("+", "triggers", "app.scratch",
         "zz_pgwarden_update, zz_pgwarden_delete, zz_pgwarden_truncate"),
    }
    before = state(gc, db)
    assert state(gc, db) == before  # plan changed nothing
    text = cli("policy", "plan", "--dsn", gc.dsn(db), "--file", str(tmp_path / "pgwarden.yaml"))
    assert "~ policy" in text.output and "+ table" in text.output


def test_apply_then_plan_is_empty_and_apply_is_idempotent(gc: GuardedCluster, db: str,
                                                          tmp_path: Path) -> None:
    path = write(tmp_path, TEST_POLICY.replace("statement: 500", "statement: 100"))
    res = cli("policy", "apply", "--dsn", gc.dsn(db), "--file", str(path), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["version"] == 2
    assert cli("policy", "plan", "--dsn", gc.dsn(db), "--file", str(path)).output.strip() == \
        "no changes"
    triggers = gc.sql(db, "SELECT oid FROM pg_trigger WHERE tgname LIKE 'zz_pgwarden%' ORDER BY 1")
    again = json.loads(cli("policy", "apply", "--dsn", gc.dsn(db), "--file", str(path),
                           "--json").output)
    assert again["changes"] == [] and again["version"] == 3
    # no DDL the second time: the very same triggers
    assert gc.sql(db, "SELECT oid FROM pg_trigger WHERE tgname LIKE 'zz_pgwarden%' ORDER BY 1") \
        == triggers
    # the new limit is enforced
    out = gc.run_psql(db, "app_rw", "UPDATE app.orders SET status = 'x' WHERE id <= 101")
    assert out.rule == "max_rows"


def test_apply_is_recorded_with_hash_and_git_commit(gc: GuardedCluster, db: str,
                                                    tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    path = write(repo, TEST_POLICY)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "pgwarden.yaml"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "policy"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    out = json.loads(cli("policy", "apply", "--dsn", gc.dsn(db), "--file", str(path),
                         "--json").output)
    assert out["git_commit"] == sha
    rec = [r for r in gc.ledger(db) if r["kind"] == "policy_applied"][-1]
    assert (rec["git_commit"], rec["policy_version"]) == (sha, out["version"])
    row = gc.sql(db, "SELECT sha256, git_commit, source FROM pgwarden.policy WHERE version = %s",
                 [out["version"]])[0]
    assert row == (out["sha256"], sha, TEST_POLICY)
    path.write_text(TEST_POLICY + "# edited\n")
    out = json.loads(cli("policy", "apply", "--dsn", gc.dsn(db), "--file", str(path),
                         "--json").output)
    assert out["git_commit"] == f"{sha}-dirty"


def test_invalid_policy_changes_nothing(gc: GuardedCluster, db: str, tmp_path: Path) -> None:
    before = state(gc, db)
    path = write(tmp_path, TEST_POLICY.replace("no_drop: allow", "no_drop: maybe"))
    res = cli("policy", "apply", "--dsn", gc.dsn(db), "--file", str(path))
    assert res.exit_code == 1 and "pgwarden.yaml:" in res.output and "no_drop" in res.output
    assert state(gc, db) == before


def test_apply_is_atomic_when_the_server_fails_midway(gc: GuardedCluster, db: str,
                                                      tmp_path: Path) -> None:
    # a user trigger named like a guard trigger makes creating the guard fail halfway
    gc.sql(db, "CREATE FUNCTION app.noop() RETURNS trigger LANGUAGE plpgsql AS"
               " $$ BEGIN RETURN NULL; END $$;"
               "CREATE TRIGGER zz_pgwarden_truncate BEFORE TRUNCATE ON app.scratch"
               " FOR EACH STATEMENT EXECUTE FUNCTION app.noop()")
    before = state(gc, db)
    path = write(tmp_path, TEST_POLICY.replace("app.invoice_seq]", "app.invoice_seq, app.scratch]"))
    res = cli("policy", "apply", "--dsn", gc.dsn(db), "--file", str(path))
    assert res.exit_code == 1 and "nothing was changed" in res.output
    assert state(gc, db) == before
    assert gc.sql(db, "SELECT count(*) FROM pgwarden.policy") == [(1,)]


def test_pattern_guards_new_tables(gc: GuardedCluster, db: str, tmp_path: Path) -> None:
    path = write(tmp_path, TEST_POLICY.replace("app.invoice_seq]", "app.invoice_seq,"
                                               " \"app.audit_*\"]"))
    assert cli("policy", "apply", "--dsn", gc.dsn(db), "--file", str(path)).exit_code == 0
    assert gc.run_psql(db, "app_owner", "CREATE TABLE app.audit_2026 AS"
                                        " SELECT g AS id FROM generate_series(1, 10) g").ok
    out = gc.run_psql(db, "app_owner", "DELETE FROM app.audit_2026")
    assert out.rule == "require_where"
    out = gc.run_psql(db, "app_owner", "ALTER TABLE app.scratch RENAME TO audit_scratch;"
                                       "TRUNCATE app.audit_scratch")
    assert out.rule == "no_truncate"  # renamed into the pattern: guarded in the same transaction
    # guarded automatically means nothing is left for plan to do
    assert cli("policy", "plan", "--dsn", gc.dsn(db), "--file", str(path)).output.strip() == \
        "no changes"
    assert gc.sql(db, "SELECT via FROM pgwarden.protected WHERE identity = 'app.audit_2026'") \
        == [("pattern",)]


def test_drift_reports_and_apply_repairs(gc: GuardedCluster, db: str, tmp_path: Path) -> None:
    path = write(tmp_path, TEST_POLICY)
    assert cli("policy", "drift", "--dsn", gc.dsn(db)).exit_code == 1  # TRUNCATE granted in seed
    gc.sql(db, "REVOKE TRUNCATE ON ALL TABLES IN SCHEMA app FROM app_rw, migrator, etl")
    clean = cli("policy", "drift", "--dsn", gc.dsn(db), "--file", str(path))
    assert clean.exit_code == 0 and clean.output.strip() == "no drift"
    edited = write(tmp_path, TEST_POLICY.replace("statement: 500", "statement: 400"))
    differs = cli("policy", "drift", "--dsn", gc.dsn(db), "--file", str(edited))
    assert differs.exit_code == 1 and "policy_differs" in differs.output
    path = write(tmp_path, TEST_POLICY)
    gc.sql(db, "ALTER TABLE app.orders DISABLE TRIGGER zz_pgwarden_delete;"
               "GRANT pg_read_all_data TO app_rw;"
               "ALTER ROLE etl SET session_replication_role = replica")
    try:
        res = cli("policy", "drift", "--dsn", gc.dsn(db), "--json")
        kinds = {(f["kind"], f["object"]) for f in json.loads(res.output)["findings"]}
        assert res.exit_code == 1
        assert {("guard_trigger", "app.orders"), ("read_all_data", "app_rw"),
                ("not_enforced", "app.orders")} <= kinds
        assert any(k == "role_setting" for k, _ in kinds)
        # apply repairs what it owns (the trigger), drift still reports the rest
        assert cli("policy", "apply", "--dsn", gc.dsn(db), "--file", str(path)).exit_code == 0
        kinds = {f["kind"] for f in json.loads(cli("policy", "drift", "--dsn", gc.dsn(db),
                                                   "--json").output)["findings"]}
        assert "guard_trigger" not in kinds and "read_all_data" in kinds
    finally:
        gc.sql(db, "REVOKE pg_read_all_data FROM app_rw; ALTER ROLE etl RESET ALL")


def test_non_admin_cannot_plan_or_apply(gc: GuardedCluster, db: str, tmp_path: Path) -> None:
    path = write(tmp_path, TEST_POLICY)
    res = cli("policy", "apply", "--dsn", gc.dsn(db, "app_owner"), "--file", str(path))
    assert res.exit_code == 1 and "permission denied" in res.output
    gc.sql(db, "GRANT pgwarden_admin TO app_owner")
    try:
        res = cli("policy", "plan", "--dsn", gc.dsn(db, "app_owner"), "--file", str(path))
        assert res.exit_code == 0, res.output
    finally:
        gc.sql(db, "REVOKE pgwarden_admin FROM app_owner")

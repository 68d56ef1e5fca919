"""The hash-chained ledger: records survive rollbacks, tampering is detected by
`pgwarden audit verify` (exit 1, first bad record named), concurrency keeps one linear chain.

Tampering is done as the superuser (the only role that can: the ledger is append-only by
trigger, ENABLE ALWAYS, and nobody else has privileges on it).
"""

from __future__ import annotations

import json
import threading

import psycopg
import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.db.testing import GuardedCluster

pytestmark = pytest.mark.pg


@pytest.fixture
def db(gc: GuardedCluster) -> str:
    name = gc.new_db()
    with psycopg.connect(gc.dsn(name, "app_rw"), autocommit=True) as conn:
        for i in range(6):  # some blocked decisions to chain, in one backend
            with pytest.raises(psycopg.Error):
                conn.execute(f"DELETE FROM app.orders WHERE {i} = {i}")
    return name


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def tamper(gc: GuardedCluster, db: str, sql: str, hide: bool = True) -> None:
    """Run `sql` with the append-only trigger disabled; with `hide`, also delete the records
    pgwarden staged about disabling it (a careful attacker would)."""
    gc.sql(db, "SELECT pgwarden.chain_pending()")
    gc.sql(db, "ALTER TABLE pgwarden.ledger DISABLE TRIGGER append_only;" + sql +
           ";ALTER TABLE pgwarden.ledger ENABLE ALWAYS TRIGGER append_only")
    if hide:
        gc.sql(db, "DELETE FROM pgwarden.ledger_staging")


def verify(gc: GuardedCluster, db: str, *extra: str) -> tuple[int, dict]:
    res = cli("audit", "verify", "--dsn", gc.dsn(db), "--json", *extra)
    return res.exit_code, json.loads(res.output)


def test_intact_chain_verifies(gc: GuardedCluster, db: str) -> None:
    code, out = verify(gc, db)
    assert code == 0 and out["ok"] and out["records"] >= 8  # installed, policy_applied, 6 blocks
    text = cli("audit", "verify", "--dsn", gc.dsn(db))
    assert text.exit_code == 0 and text.output.startswith("ok: ")
    head = cli("audit", "head", "--dsn", gc.dsn(db)).output.split()
    assert int(head[0]) == out["head_seq"] and head[1] == out["head_hash"]


def test_blocked_records_survive_the_rollback(gc: GuardedCluster, db: str) -> None:
    before = gc.snapshot(db)
    with psycopg.connect(gc.dsn(db, "app_rw")) as conn:
        conn.execute("INSERT INTO app.scratch VALUES (1000, 1)")
        with pytest.raises(psycopg.Error):
            conn.execute("DELETE FROM app.customers WHERE id > %s", (-1,))
        conn.rollback()
    assert gc.snapshot(db) == before
    rec = gc.ledger(db)[-1]
    assert (rec["kind"], rec["rule"], rec["object"]) == ("blocked", "max_rows", "app.customers")
    assert rec["rows"] == 1000 and rec["statement"] == "DELETE FROM app.customers WHERE id > $1"


def test_edit_is_detected(gc: GuardedCluster, db: str) -> None:
    tamper(gc, db, "UPDATE pgwarden.ledger SET payload = replace(payload, 'app_rw', 'postgres')"
                   " WHERE seq = 4")
    code, out = verify(gc, db)
    assert code == 1 and out["bad_seq"] == 4 and "edited" in out["problem"]
    text = cli("audit", "verify", "--dsn", gc.dsn(db))
    assert text.exit_code == 1 and "record 4" in text.output


def test_delete_is_detected(gc: GuardedCluster, db: str) -> None:
    tamper(gc, db, "DELETE FROM pgwarden.ledger WHERE seq = 3")
    code, out = verify(gc, db)
    assert code == 1 and out["bad_seq"] == 4 and "expected record 3" in out["problem"]


def test_insert_is_detected(gc: GuardedCluster, db: str) -> None:
    tamper(gc, db, "UPDATE pgwarden.ledger SET seq = seq + 1000 WHERE seq >= 5;"
                   "UPDATE pgwarden.ledger SET seq = seq - 999 WHERE seq >= 1005;"
                   "INSERT INTO pgwarden.ledger (seq, payload, prev_hash, hash)"
                   " SELECT 5, '{\"kind\":\"forged\"}', hash,"
                   "  sha256(hash || convert_to('5' || E'\\n' || '{\"kind\":\"forged\"}', 'UTF8'))"
                   " FROM pgwarden.ledger WHERE seq = 4")
    code, out = verify(gc, db)
    # the forged record links correctly to 4; the next one no longer links to it
    assert code == 1 and out["bad_seq"] == 6 and "prev_hash" in out["problem"]


def test_reorder_is_detected(gc: GuardedCluster, db: str) -> None:
    tamper(gc, db, "UPDATE pgwarden.ledger SET seq = -1 WHERE seq = 3;"
                   "UPDATE pgwarden.ledger SET seq = 3 WHERE seq = 4;"
                   "UPDATE pgwarden.ledger SET seq = 4 WHERE seq = -1")
    code, out = verify(gc, db)
    assert code == 1 and out["bad_seq"] == 3


def test_truncated_tail_is_detected_by_the_head_and_by_an_anchor(gc: GuardedCluster,
                                                                 db: str) -> None:
    anchor = cli("audit", "head", "--dsn", gc.dsn(db)).output.split()
    seq = int(anchor[0])
    tamper(gc, db, f"DELETE FROM pgwarden.ledger WHERE seq > {seq - 2}")
    code, out = verify(gc, db)
    assert code == 1 and "head" in out["problem"]
    # a careful attacker also rewinds the head: only the anchor kept elsewhere tells
    gc.sql(db, f"UPDATE pgwarden.ledger_head SET (seq, hash) = (SELECT seq, hash FROM"
               f" pgwarden.ledger WHERE seq = {seq - 2})")
    code, out = verify(gc, db)
    assert code == 0
    code, out = verify(gc, db, "--expect-head", f"{anchor[0]}:{anchor[1]}")
    assert code == 1 and "anchored head" in out["problem"]
    assert out["anchor"]["found_at"] is None


def test_anchor_still_in_chain_passes(gc: GuardedCluster, db: str) -> None:
    anchor = cli("audit", "head", "--dsn", gc.dsn(db)).output.split()
    gc.run_psql(db, "app_rw", "TRUNCATE app.orders")  # one more record after the anchor
    code, out = verify(gc, db, "--expect-head", anchor[1])
    assert code == 0 and out["anchor"]["found_at"] == int(anchor[0])


def test_ledger_is_append_only(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "SELECT pgwarden.chain_pending()")
    with psycopg.connect(gc.dsn(db), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for sql in ("UPDATE pgwarden.ledger SET payload = '{}' WHERE seq = 1",
                    "DELETE FROM pgwarden.ledger WHERE seq = 1", "TRUNCATE pgwarden.ledger"):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql)
            assert e.value.sqlstate == "PW001" and e.value.diag.constraint_name == \
                "guard_integrity"
    for user in ("app_rw", "app_owner"):
        out = gc.run_psql(db, user, "DELETE FROM pgwarden.ledger")
        assert out.sqlstate == "42501", out  # permission denied
        out = gc.run_psql(db, user, "INSERT INTO pgwarden.ledger_staging (payload) VALUES ('x')")
        assert out.sqlstate == "42501", out
    assert verify(gc, db)[0] == 0


def test_disabling_the_ledger_trigger_is_itself_recorded(gc: GuardedCluster, db: str) -> None:
    tamper(gc, db, "SELECT 1", hide=False)
    recs = [r for r in gc.ledger(db) if r.get("rule") == "guard_integrity"]
    assert recs and recs[-1]["kind"] == "allowed" and recs[-1]["session_user"] == "postgres"


def test_concurrent_decisions_make_one_linear_chain(gc: GuardedCluster, db: str) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
                conn.execute("SET lock_timeout = '20s'")
                for i in range(4):
                    with pytest.raises(psycopg.Error) as e:
                        conn.execute("UPDATE app.orders SET status = %s", (f"w{n}-{i}",))
                    assert e.value.sqlstate == "PW001"
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(e)

    start = len(gc.ledger(db))
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    code, out = verify(gc, db)
    assert code == 0 and out["records"] == start + 48
    hashes = gc.sql(db, "SELECT count(DISTINCT prev_hash), count(*) FROM pgwarden.ledger")
    assert hashes[0][0] == hashes[0][1]


def test_policy_applied_record(gc: GuardedCluster, db: str) -> None:
    rec = [r for r in gc.ledger(db) if r["kind"] == "policy_applied"][0]
    applied = gc.sql(db, "SELECT version, sha256 FROM pgwarden.policy")
    assert (rec["policy_version"], rec["policy_sha256"]) == applied[0]


def test_audit_list(gc: GuardedCluster, db: str) -> None:
    res = cli("audit", "list", "--dsn", gc.dsn(db), "--json", "--since", "2", "--limit", "3")
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert [r["seq"] for r in rows] == [3, 4, 5] and rows[0]["kind"] == "blocked"
    text = cli("audit", "list", "--dsn", gc.dsn(db), "--limit", "2")
    assert text.exit_code == 0 and "installed" in text.output

"""Approval requests and one-time grants against abuse (docs/approvals.md).

Policy (tests/approvals_helpers.py): writes to app.orders and app.customers without a
restricting WHERE, above 100 rows per statement, TRUNCATE and DROP need an approval; reviewers
are the roles reviewer and alice and the members of secops (bob). app_rw requests, etl is
another principal with the same privileges. BIG_UPDATE changes 288 orders and shows in the data
how often it ran (amount + 1 each time). After every refused attempt a snapshot of the app
schema (data and structure) shows nothing changed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from agent.audit import verify
from agent.db.testing import GuardedCluster, Outcome
from agent.policy import client
from agent.policy.schema import load
from tests.approvals_helpers import (
    APPROVAL_POLICY,
    BIG_UPDATE,
    approve,
    request_id,
    request_row,
    start_cluster,
)

pytestmark = pytest.mark.pg


@pytest.fixture(scope="module")
def gc() -> Iterator[GuardedCluster]:
    g = start_cluster()
    yield g
    g.destroy()


@pytest.fixture
def db(gc: GuardedCluster) -> str:
    return gc.new_db()


def refused(gc: GuardedCluster, db: str, user: str, sql: str,
            params: tuple[object, ...] | None = None) -> int:
    """Run `sql` (psql; with `params`, psycopg with bind parameters, prepared); assert PW002
    with nothing changed; return the request id."""
    before = gc.snapshot(db)
    out: Outcome = gc.run_extended(db, user, sql, params, prepare=True) if params is not None \
        else gc.run_psql(db, user, sql)
    assert out.sqlstate == "PW002", out
    assert gc.snapshot(db) == before, "a statement waiting for approval changed something"
    return request_id(out.message)


def amounts(gc: GuardedCluster, db: str) -> tuple[int, int]:
    return gc.sql(db, "SELECT count(*), sum(amount)::bigint FROM app.orders"
                      " WHERE amount > 900")[0]


# -- requests ----------------------------------------------------------------------------------

def test_request_error_fields_and_impact(gc: GuardedCluster, db: str) -> None:
    with psycopg.connect(gc.dsn(db, "app_rw")) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("UPDATE app.orders SET status = %s WHERE amount > %s", ("x", 900))
    d = e.value.diag
    assert (d.sqlstate, d.constraint_name, d.schema_name, d.table_name) == \
        ("PW002", "max_rows", "app", "orders")
    rid = request_id(d.message_primary)
    assert d.message_primary == ("pgwarden: UPDATE on table app.orders requires approval "
                                 f"(rule max_rows): approval request {rid}")
    assert f"pgwarden approvals approve {rid}" in d.message_hint
    assert f"Approval request {rid} is pending review" in d.message_detail
    r = request_row(gc, db, rid)
    assert (r["status"], r["requester"], r["rule"], r["op"], r["object"], r["rows"]) == \
        ("pending", "app_rw", "max_rows", "UPDATE", "app.orders", 288)
    assert r["statement"] == "UPDATE app.orders SET status = $1 WHERE amount > $2"
    assert r["key_columns"] == ["id"]
    ids = [i for (i,) in gc.sql(db, "SELECT id FROM app.orders WHERE amount > 900")]
    assert [k[0] for k in r["key_sample"]] == sorted(ids, key=lambda i: f"[{i}]")[:10]
    assert "x" not in json.dumps(r["key_sample"])  # keys only: no other column value
    assert r["identity"] is None and r["pid"] > 0


def test_identical_submissions_reuse_the_pending_request(gc: GuardedCluster, db: str) -> None:
    first = refused(gc, db, "app_rw", BIG_UPDATE)
    again = refused(gc, db, "app_rw", BIG_UPDATE.replace("900", "900 "))  # same shape, same rows
    prepared = refused(gc, db, "app_rw", "UPDATE app.orders SET amount = amount + %s"
                                         " WHERE amount > %s", (1, 900))
    assert first == again == prepared
    other = refused(gc, db, "app_rw", BIG_UPDATE.replace("900", "899"))  # more rows: another
    assert other != first
    kinds = [(r["kind"], r.get("request_id")) for r in gc.ledger(db)
             if r["kind"].startswith("approval")]
    assert kinds.count(("approval_requested", first)) == 1
    assert kinds.count(("approval_required", first)) == 3
    assert gc.sql(db, "SELECT count(*) FROM pgwarden.approval_event WHERE event = 'requested'"
                      " AND request_id = %s", [first]) == [(1,)]


def test_request_survives_the_rollback_of_its_transaction(gc: GuardedCluster, db: str) -> None:
    out = gc.run_psql(db, "app_rw", f"BEGIN; UPDATE app.scratch SET v = 1; {BIG_UPDATE}; COMMIT")
    assert out.sqlstate == "PW002"
    assert gc.sql(db, "SELECT count(*) FROM app.scratch WHERE v = 1") == [(0,)]
    assert request_row(gc, db, request_id(out.message))["status"] == "pending"


# -- the grant: once, for this principal, this statement, these rows ------------------------------

def test_approved_statement_runs_once(gc: GuardedCluster, db: str) -> None:
    rid = refused(gc, db, "app_rw", BIG_UPDATE)
    n, total = amounts(gc, db)
    assert approve(gc, db, rid)["status"] == "approved"
    assert gc.run_psql(db, "app_rw", BIG_UPDATE).output.strip() == "UPDATE 288"
    assert amounts(gc, db) == (n, total + n)
    replay = refused(gc, db, "app_rw", BIG_UPDATE)  # replay after use
    assert replay != rid and amounts(gc, db) == (n, total + n)
    r = request_row(gc, db, rid)
    assert (r["status"], r["uses_left"], r["reviewer"], r["reviewer_os_user"]) == \
        ("used", 0, "reviewer", "test-os-user")
    kinds = [r["kind"] for r in gc.ledger(db) if r.get("request_id") == rid]
    assert kinds == ["approval_requested", "approval_required", "approval_granted",
                     "approval_used"]
    assert verify(gc.dsn(db)).ok


def test_grant_works_across_protocols(gc: GuardedCluster, db: str) -> None:
    # requested with literals (simple protocol), run with bind parameters (prepared): the
    # fingerprint ignores literals and the rows are the same
    rid = refused(gc, db, "app_rw", BIG_UPDATE)
    approve(gc, db, rid)
    out = gc.run_extended(db, "app_rw", "UPDATE app.orders SET amount = amount + %s"
                                        " WHERE amount > %s", (1, 900), prepare=True)
    assert out.ok and out.output == "288"


def test_self_approval_is_refused(gc: GuardedCluster, db: str) -> None:
    rid = refused(gc, db, "alice", BIG_UPDATE)  # alice is a reviewer, and the requester
    before = gc.snapshot(db)
    gc.sql(db, "GRANT reviewer TO app_rw")
    for user, role, sql in (
            ("alice", None, "SELECT pgwarden.approve(%s)"),
            ("alice", None, "SELECT pgwarden.deny(%s, 'mine')"),
            ("app_rw", None, "SELECT pgwarden.approve(%s)"),  # not a reviewer at all,
            ("app_rw", "reviewer", "SELECT pgwarden.approve(%s)")):  # whatever role it sets
        with psycopg.connect(gc.dsn(db, user), autocommit=True) as conn:
            if role:
                conn.execute(f"SET ROLE {role}")
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql, [rid])
            assert e.value.sqlstate == "42501", (user, sql)
    assert request_row(gc, db, rid)["status"] == "pending"
    refused(gc, db, "alice", BIG_UPDATE)
    assert gc.snapshot(db) == before
    assert approve(gc, db, rid, user="bob")["reviewer"] == "bob"  # member of secops
    assert gc.run_psql(db, "alice", BIG_UPDATE).ok


def test_self_approval_message(gc: GuardedCluster, db: str) -> None:
    rid = refused(gc, db, "alice", BIG_UPDATE)
    with psycopg.connect(gc.dsn(db, "alice"), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT pgwarden.approve(%s)", [rid])
    assert e.value.diag.message_primary == (
        f"pgwarden: alice requested approval request {rid} and may not review it (a requester "
        "cannot approve their own request)")


def test_different_principal_cannot_use_the_grant(gc: GuardedCluster, db: str) -> None:
    rid = refused(gc, db, "app_rw", BIG_UPDATE)
    approve(gc, db, rid)
    gc.sql(db, "GRANT app_rw TO etl")
    refused(gc, db, "etl", BIG_UPDATE)
    refused(gc, db, "etl", f"SET ROLE app_rw; {BIG_UPDATE}")  # session_user, not current_user
    assert request_row(gc, db, rid)["uses_left"] == 1
    assert gc.run_psql(db, "app_rw", BIG_UPDATE).ok  # still there for its principal


def test_same_shape_other_rows_is_not_covered(gc: GuardedCluster, db: str) -> None:
    rid = refused(gc, db, "app_rw", BIG_UPDATE)
    approve(gc, db, rid)
    # the same fingerprint (literals differ), other target rows: its own request
    other = refused(gc, db, "app_rw", BIG_UPDATE.replace("900", "800"))
    assert other != rid
    other = refused(gc, db, "app_rw", "UPDATE app.orders SET amount = amount + %s"
                                      " WHERE amount > %s", (2, 950))
    assert other != rid and request_row(gc, db, rid)["uses_left"] == 1


def test_rows_changed_since_the_approval(gc: GuardedCluster, db: str) -> None:
    rid = refused(gc, db, "app_rw", BIG_UPDATE)
    approve(gc, db, rid)
    gc.sql(db, "INSERT INTO app.orders (id, customer_id, amount) VALUES (9001, 1, 950)")
    n, total = amounts(gc, db)
    new = refused(gc, db, "app_rw", BIG_UPDATE)  # 289 rows now: another effect
    assert new != rid and amounts(gc, db) == (n, total)
    assert request_row(gc, db, new)["rows"] == 289


def test_expired_grant(gc: GuardedCluster, db: str) -> None:
    client.apply(gc.dsn(db), load(APPROVAL_POLICY.replace("grant_ttl: 10m", "grant_ttl: 1s")),
                 None)
    rid = refused(gc, db, "app_rw", BIG_UPDATE)
    approve(gc, db, rid)
    time.sleep(2.5)
    n, total = amounts(gc, db)
    new = refused(gc, db, "app_rw", BIG_UPDATE)
    assert new != rid and amounts(gc, db) == (n, total)
    assert request_row(gc, db, rid)["status"] == "expired"
    expired = [r for r in gc.ledger(db) if r["kind"] == "approval_expired"]
    assert [(r["request_id"], r["what"]) for r in expired] == [(rid, "grant")]


def test_expired_request_cannot_be_approved(gc: GuardedCluster, db: str) -> None:
    client.apply(gc.dsn(db), load(APPROVAL_POLICY.replace("request_ttl: 1h",
                                                          "request_ttl: 1s")), None)
    rid = refused(gc, db, "app_rw", BIG_UPDATE)
    time.sleep(2.5)
    with psycopg.connect(gc.dsn(db, "reviewer"), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT pgwarden.approve(%s)", [rid])
    assert e.value.sqlstate == "55000" and "expired" in e.value.diag.message_primary
    assert refused(gc, db, "app_rw", BIG_UPDATE) != rid  # a new request, not the expired one


def test_rolled_back_use_does_not_consume_the_grant(gc: GuardedCluster, db: str) -> None:
    rid = refused(gc, db, "app_rw", BIG_UPDATE)
    approve(gc, db, rid)
    n, total = amounts(gc, db)
    with psycopg.connect(gc.dsn(db, "app_rw")) as conn:
        assert conn.execute(BIG_UPDATE).rowcount == 288
        conn.rollback()
    assert amounts(gc, db) == (n, total) and request_row(gc, db, rid)["uses_left"] == 1
    assert gc.run_psql(db, "app_rw", BIG_UPDATE).ok
    assert amounts(gc, db) == (n, total + n)


def test_concurrent_use_of_one_grant(gc: GuardedCluster, db: str) -> None:
    rid = refused(gc, db, "app_rw", BIG_UPDATE)
    approve(gc, db, rid)
    n, total = amounts(gc, db)
    first = psycopg.connect(gc.dsn(db, "app_rw"))
    first.execute(BIG_UPDATE)  # consumes the grant, holds its row until commit
    result: dict[str, object] = {}

    def second() -> None:
        try:
            with psycopg.connect(gc.dsn(db, "app_rw")) as conn:
                conn.execute(BIG_UPDATE)
                conn.commit()
                result["ok"] = True
        except psycopg.Error as e:
            result["error"] = e.sqlstate

    t = threading.Thread(target=second)
    t.start()
    t.join(timeout=2)
    assert t.is_alive(), "the second use should wait for the first"
    first.commit()
    first.close()
    t.join(timeout=60)
    # the first commit made the 288 rows 'amount + 1'; the second sees the same rows (still
    # > 900), so the same effect, but the grant is gone: exactly one run
    assert result == {"error": "PW002"}
    assert amounts(gc, db) == (n, total + n)
    assert request_row(gc, db, rid)["status"] == "used"


def test_denial_keeps_its_reason(gc: GuardedCluster, db: str) -> None:
    rid = refused(gc, db, "app_rw", BIG_UPDATE)
    with psycopg.connect(gc.dsn(db, "reviewer"), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT pgwarden.deny(%s, '')", [rid])
        assert e.value.sqlstate == "22023"
        r = conn.execute("SELECT pgwarden.deny(%s, 'not during the sale')", [rid]).fetchone()[0]
    assert (r["status"], r["comment"], r["reviewer"]) == \
        ("denied", "not during the sale", "reviewer")
    assert refused(gc, db, "app_rw", BIG_UPDATE) != rid
    rec = [r for r in gc.ledger(db) if r["kind"] == "approval_denied"]
    assert [(r["request_id"], r["comment"]) for r in rec] == [(rid, "not during the sale")]


def until_approved(gc: GuardedCluster, db: str, sql: str) -> list[dict[str, object]]:
    """Run `sql` until it goes through, approving each request it makes (one per relation a
    cascade or a partitioned table reaches); the requests, in order."""
    made = []
    for _ in range(5):
        out = gc.run_psql(db, "app_rw", sql)
        if out.ok:
            return made
        assert out.sqlstate == "PW002", out
        rid = request_id(out.message)
        made.append(request_row(gc, db, rid))
        approve(gc, db, rid)
    raise AssertionError(f"{sql} still refused after {made}")


def test_unrestricted_delete_and_truncate_need_approval_too(gc: GuardedCluster, db: str) -> None:
    made = until_approved(gc, db, "DELETE FROM app.customers WHERE id > 0 OR true")
    # ON DELETE CASCADE reaches app.orders: each relation's write is approved for what it does
    assert {(r["object"], r["rule"], r["rows"]) for r in made} == {
        ("app.customers", "require_where", 1000), ("app.orders", "require_where", 3000)}
    assert gc.sql(db, "SELECT count(*) FROM app.customers") == [(0,)]
    made = until_approved(gc, db, "TRUNCATE app.events")
    assert {r["rule"] for r in made} == {"no_truncate"}
    assert gc.sql(db, "SELECT count(*) FROM app.events") == [(0,)]


def test_forged_requests_show_what_they_bind(gc: GuardedCluster, db: str) -> None:
    # a session may call the runtime function itself, claiming an impact: the request function
    # recomputes the hash from the keys it is given, so what a reviewer sees is what the grant
    # allows; keys that do not match the claimed hash are refused
    before = gc.snapshot(db)
    with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
        effect = {"rows": 1, "keys": "[[1]]", "key_columns": ["id"],
                  "hash": "0" * 64}
        d = conn.execute("SELECT pgwarden._guard_write_check('app.orders'::regclass, 'UPDATE',"
                         " 288, false, %s, 'app_rw', %s::jsonb)",
                         [BIG_UPDATE, json.dumps(effect)]).fetchone()[0]
    assert d["sqlstate"] == "PW002" and "could not be stored" in d["message"]
    assert gc.sql(db, "SELECT count(*) FROM pgwarden.approval_request") == [(0,)]
    assert gc.snapshot(db) == before


def test_no_one_but_pgwarden_writes_requests(gc: GuardedCluster, db: str) -> None:
    with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
        for sql in ("INSERT INTO pgwarden.approval_request (expires_at, requester, rule, op,"
                    " object, statement, fingerprint, effect, status, uses_left) VALUES (now()"
                    " + interval '1h', 'app_rw', 'r', 'UPDATE', 'app.orders', 's', 'f', 'e',"
                    " 'approved', 1)",
                    "UPDATE pgwarden.approval_request SET status = 'approved'",
                    "SELECT pgwarden._approval_request('{}', '{}')",
                    "SELECT pgwarden._review(1, true, NULL, NULL)",
                    "SELECT * FROM pgwarden.approval_outbox(ARRAY['x:json'])"):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql)
            assert e.value.sqlstate == "42501", sql

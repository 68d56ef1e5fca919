"""The whole approval story with real clients, a real relay process and a real HTTP receiver:
a write the policy sends for approval fails with PW002 and a request; the relay notifies a
JSON webhook (HMAC-signed) and a Slack webhook; another principal approves with the CLI; the
requester's re-run goes through once, a second re-run fails; the ledger tells it all."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.audit import verify
from agent.db.testing import GuardedCluster
from tests.approvals_helpers import (
    BIG_UPDATE,
    SECRET,
    Receiver,
    RelayProcess,
    cli,
    request_id,
    start_cluster,
)

pytestmark = pytest.mark.pg


@pytest.fixture(scope="module")
def gc() -> Iterator[GuardedCluster]:
    g = start_cluster()
    yield g
    g.destroy()


def events(got: list, path: str) -> list[str]:  # type: ignore[type-arg]
    return [d.headers["X-Pgwarden-Event"] for d in got if d.path == path]


def test_request_notify_approve_run_once(gc: GuardedCluster, tmp_path: Path) -> None:
    db = gc.new_db()
    receiver = Receiver().start()
    relay = RelayProcess(gc.dsn(db), ["--webhook", f"soc={receiver.url('/soc')}",
                                      "--slack", f"chat={receiver.url('/slack')}"],
                         tmp_path / "relay.log")
    try:
        before = gc.snapshot(db)
        out = gc.run_psql(db, "app_rw", BIG_UPDATE)  # psql: simple protocol, literals
        assert out.sqlstate == "PW002" and out.rule == "max_rows"
        assert gc.snapshot(db) == before
        rid = request_id(out.message)

        got = receiver.wait(lambda g: len(g) >= 2)
        soc = next(d for d in got if d.path == "/soc")
        # the JSON webhook: signed body, idempotency key, the request as the reviewer needs it
        assert soc.headers["X-Pgwarden-Signature"] == "sha256=" + hmac.new(
            SECRET.encode(), soc.body, hashlib.sha256).hexdigest()
        doc = soc.json
        assert doc["event"] == "approval.requested" and doc["database"] == db
        assert doc["idempotency_key"] == soc.headers["X-Pgwarden-Idempotency-Key"] \
            == f"pgwarden:{db}:{doc['event_id']}"
        r = doc["request"]
        assert (r["id"], r["status"], r["requester"], r["identity"], r["rule"], r["op"],
                r["object"], r["rows"]) == (rid, "pending", "app_rw", None, "max_rows", "UPDATE",
                                            "app.orders", 288)
        assert r["statement"] == "UPDATE app.orders SET amount = amount + $1 WHERE amount > $2"
        assert len(r["key_sample"]) == 10 and r["key_columns"] == ["id"]
        assert "keys" not in r  # the sample only, never all keys nor other values
        slack = next(d for d in got if d.path == "/slack").json
        assert set(slack) == {"text", "blocks"}
        assert f"approval request {rid} needs approval" in slack["text"]
        assert "app_rw" in slack["text"] and "288 row(s)" in slack["text"]
        assert f"pgwarden approvals approve {rid}" in slack["blocks"][0]["text"]["text"]

        # the requester cannot approve; a reviewer does, with the CLI, as another role
        mine = cli("approvals", "approve", str(rid), "--dsn", gc.dsn(db, "app_rw"))
        assert mine.returncode == 1 and "reviewers" in mine.stderr
        shown = json.loads(cli("approvals", "show", str(rid), "--json",
                               "--dsn", gc.dsn(db, "reviewer")).stdout)
        assert shown["status"] == "pending" and shown["rows"] == 288
        listed = json.loads(cli("approvals", "list", "--json",
                                "--dsn", gc.dsn(db, "reviewer")).stdout)
        assert [x["id"] for x in listed] == [rid]
        ok = cli("approvals", "approve", str(rid), "--comment", "OPS-1", "--json",
                 "--dsn", gc.dsn(db, "reviewer"), env={"SUDO_USER": "carol"})
        assert ok.returncode == 0, ok.stderr
        granted = json.loads(ok.stdout)
        assert (granted["status"], granted["reviewer"], granted["reviewer_os_user"],
                granted["comment"]) == ("approved", "reviewer", "carol", "OPS-1")
        receiver.wait(lambda g: "approval.approved" in events(g, "/soc")
                      and "approval.approved" in events(g, "/slack"))

        # the re-run (psycopg, bind parameters) goes through once
        n, total = gc.sql(db, "SELECT count(*), sum(amount) FROM app.orders WHERE amount > 900")[0]
        with psycopg.connect(gc.dsn(db, "app_rw")) as conn:
            cur = conn.execute("UPDATE app.orders SET amount = amount + %s WHERE amount > %s",
                               (1, 900))
            assert cur.rowcount == 288
        assert gc.sql(db, "SELECT count(*), sum(amount) FROM app.orders"
                          " WHERE amount > 900")[0] == (n, total + n)
        after = gc.snapshot(db)
        again = gc.run_psql(db, "app_rw", BIG_UPDATE)
        assert again.sqlstate == "PW002" and request_id(again.message) != rid
        assert gc.snapshot(db) == after

        kinds = [(x["kind"], x.get("request_id")) for x in gc.ledger(db)
                 if x["kind"].startswith("approval")]
        assert kinds[:4] == [("approval_requested", rid), ("approval_required", rid),
                             ("approval_granted", rid), ("approval_used", rid)]
        assert verify(gc.dsn(db)).ok
        receiver.wait(lambda g: events(g, "/soc").count("approval.requested") == 2)
        status = cli("notify", "status", "--dsn", gc.dsn(db), "--webhook", "soc=x",
                     "--slack", "chat=x", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert {(s["webhook"], s["delivered"], s["pending"], s["failing"])
                for s in json.loads(status.stdout)} == {("chat", 3, 0, 0), ("soc", 3, 0, 0)}
    finally:
        log = relay.stop()
        receiver.stop()
    assert "delivered event" in log


def test_denied_request(gc: GuardedCluster) -> None:
    db = gc.new_db()
    out = gc.run_psql(db, "app_rw", "DELETE FROM app.orders WHERE true")
    rid = request_id(out.message)
    no_reason = cli("approvals", "deny", str(rid), "--dsn", gc.dsn(db, "reviewer"))
    assert no_reason.returncode == 2  # --reason is required
    res = cli("approvals", "deny", str(rid), "--reason", "use a WHERE", "--dsn",
              gc.dsn(db, "reviewer"))
    assert res.returncode == 0 and f"denied request {rid}" in res.stdout
    text = cli("approvals", "show", str(rid), "--dsn", gc.dsn(db, "reviewer")).stdout
    assert "denied by reviewer" in text and "use a WHERE" in text
    assert cli("approvals", "approve", str(rid), "--dsn",
               gc.dsn(db, "reviewer")).returncode == 1  # not pending any more

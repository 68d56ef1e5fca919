"""The notification relay (`pgwarden notify run`, agent/notify.py) against a real receiver that
goes down: nothing is lost, nothing is delivered twice, failures are visible, the database never
waits; a forged NOTIFY sends nothing; two relays on one database deliver once."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.db.testing import GuardedCluster
from agent.notify import Webhook, backoff, render, sign
from tests.approvals_helpers import (
    BIG_UPDATE,
    SECRET,
    Receiver,
    RelayProcess,
    approve,
    cli,
    request_id,
    start_cluster,
)

pytestmark = pytest.mark.pg
HOOKS = ["--webhook", "soc=URL/soc", "--slack", "chat=URL/slack"]


@pytest.fixture(scope="module")
def gc() -> Iterator[GuardedCluster]:
    g = start_cluster()
    yield g
    g.destroy()


def hooks(receiver: Receiver) -> list[str]:
    return [h.replace("URL", f"http://127.0.0.1:{receiver.port}") for h in HOOKS]


def make_requests(gc: GuardedCluster, db: str, n: int, first: int = 0) -> list[int]:
    """n distinct requests (different row sets), each refused in well under a second: the
    database does not wait for webhooks."""
    ids = []
    for i in range(first, first + n):
        t = time.monotonic()
        out = gc.run_psql(db, "app_rw", BIG_UPDATE.replace("900", str(900 - i)))
        assert out.sqlstate == "PW002"
        assert time.monotonic() - t < 30  # refused at once, receiver or not (no HTTP here)
        ids.append(request_id(out.message))
    return ids


def status(gc: GuardedCluster, db: str,
           receiver: Receiver) -> tuple[int, dict[str, dict]]:  # type: ignore[type-arg]
    res = cli("notify", "status", "--dsn", gc.dsn(db), *hooks(receiver), "--json")
    return res.returncode, {s["webhook"]: s for s in json.loads(res.stdout)}


def test_receiver_down_for_60_seconds(gc: GuardedCluster, tmp_path: Path) -> None:
    db = gc.new_db()
    receiver = Receiver().start()
    port = receiver.port
    receiver.stop()  # down from the start: the port refuses connections
    relay = RelayProcess(gc.dsn(db), hooks(receiver), tmp_path / "relay1.log")
    down_at = time.monotonic()
    try:
        ids = make_requests(gc, db, 3)
        approve(gc, db, ids[0])
        with psycopg.connect(gc.dsn(db, "reviewer"), autocommit=True) as conn:
            conn.execute("SELECT pgwarden.deny(%s, 'no')", [ids[1]])
        time.sleep(8)
        code, st = status(gc, db, receiver)
        assert code == 1  # failing deliveries: status says so
        assert st["soc"]["failing"] == 5 and st["soc"]["delivered"] == 0
        assert "ConnectError" in st["soc"]["last_error"]
        res = cli("approvals", "show", str(ids[0]), "--json", "--dsn", gc.dsn(db, "reviewer"))
        assert res.returncode == 0, res.stderr
        shown = json.loads(res.stdout)
        attempts = [d for e in shown["events"] for d in e["deliveries"]]
        assert attempts and all(d["delivered_at"] is None and d["attempts"] >= 1
                                and d["last_error"] for d in attempts)
        # the relay itself goes away and comes back during the outage: nothing is lost
        relay.stop()
        ids += make_requests(gc, db, 1, first=3)
        relay = RelayProcess(gc.dsn(db), hooks(receiver), tmp_path / "relay2.log")
        time.sleep(max(0.0, 60 - (time.monotonic() - down_at)))
        receiver = Receiver(port=port).start()  # back, on the same port
        expected = 2 * (4 + 1 + 1)  # 4 requests, 1 approval, 1 denial; to 2 webhooks
        got = receiver.wait(lambda g: len(g) >= expected, timeout=90)
        time.sleep(3)  # anything sent twice would show up now
        got = receiver.got
    finally:
        relay.stop()
        receiver.stop()
    keys = Counter((d.path, d.headers["X-Pgwarden-Idempotency-Key"]) for d in got)
    assert len(got) == expected and all(n == 1 for n in keys.values()), keys
    by_event = Counter((d.path, d.headers["X-Pgwarden-Event"]) for d in got)
    assert by_event == {("/soc", "approval.requested"): 4, ("/slack", "approval.requested"): 4,
                        ("/soc", "approval.approved"): 1, ("/slack", "approval.approved"): 1,
                        ("/soc", "approval.denied"): 1, ("/slack", "approval.denied"): 1}
    requested = {d.json["request"]["id"] for d in got
                 if d.path == "/soc" and d.json["event"] == "approval.requested"}
    assert requested == set(ids)
    code, st = status(gc, db, receiver)
    assert code == 0 and st["soc"]["delivered"] == st["chat"]["delivered"] == 6
    assert st["soc"]["pending"] == 0


def test_forged_notify_and_two_relays(gc: GuardedCluster, tmp_path: Path) -> None:
    db = gc.new_db()
    receiver = Receiver().start()
    relays = [RelayProcess(gc.dsn(db), hooks(receiver), tmp_path / f"relay{i}.log")
              for i in range(2)]
    try:
        with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
            # anyone may NOTIFY: the payload is ignored, the outbox is the truth
            conn.execute("NOTIFY pgwarden_approvals, '1'")
            conn.execute("SELECT pg_notify('pgwarden_approvals', '{\"event\": \"approved\"}')")
        time.sleep(3)
        assert receiver.got == []
        ids = make_requests(gc, db, 3)
        receiver.wait(lambda g: len(g) >= 6)
        time.sleep(3)
    finally:
        logs = [r.stop() for r in relays]
        receiver.stop()
    keys = Counter((d.path, d.headers["X-Pgwarden-Idempotency-Key"]) for d in receiver.got)
    assert len(receiver.got) == 6 and set(keys.values()) == {1}
    assert {d.json["request"]["id"] for d in receiver.got if d.path == "/soc"} == set(ids)
    assert any("another relay serves this database" in log for log in logs)


def test_payload_rendering_and_signature() -> None:
    payload = {"event": "approval.denied", "database": "app", "at": "2026-01-01 00:00:00+00",
               "request": {"id": 7, "status": "denied", "requester": "app_rw", "identity": None,
                           "rule": "require_where", "op": "DELETE", "object": "app.orders",
                           "reason": "no WHERE", "statement": "DELETE FROM app.orders",
                           "rows": 3000, "key_columns": ["id"], "key_sample": [[1], [2]],
                           "reviewer": "bob", "reviewer_os_user": "carol", "comment": "no",
                           "pid": 1, "backend_start": "2026-01-01 00:00:00+00",
                           "created_at": "2026-01-01 00:00:00+00"}}
    body, headers = render(Webhook("soc", "json", "http://x/", "k"), 12, payload)
    assert headers["X-Pgwarden-Signature"] == sign("k", body)
    assert json.loads(body)["idempotency_key"] == "pgwarden:app:12" == \
        headers["X-Pgwarden-Idempotency-Key"]
    body, headers = render(Webhook("chat", "slack", "http://x/"), 12, payload)
    slack = json.loads(body)
    assert slack["text"] == ("pgwarden approval request 7 denied: DELETE on app.orders by app_rw "
                             "(unattested), 3000 row(s)")
    assert "Reviewed by bob (carol): no" in slack["blocks"][0]["text"]["text"]
    assert "X-Pgwarden-Signature" not in headers
    assert backoff(1) <= 1 and 3.2 <= backoff(3) <= 4 and backoff(20) <= 30
    with pytest.raises(ValueError):
        Webhook("soc", "json", "http://x/")  # a JSON webhook is always signed
    assert SECRET

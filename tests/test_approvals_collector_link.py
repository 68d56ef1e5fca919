"""The collector side of the capture link, over its real HTTP API: `approval` events (as the
relay sends them) are validated and stored, and `pgwarden session ID` links the statement that
got PW002 with the run its approval let through, by backend pid, backend start and time."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest

from agent.notify import Webhook, render
from agent.pgcluster import make_workdir
from agent.stack import CollectorProcess
from tests.approvals_helpers import ROOT

T0 = 1_790_000_000_000_000  # microseconds
REQUEST = {"id": 42, "status": "pending", "requester": "app_rw", "identity": None,
           "rule": "max_rows", "op": "UPDATE", "object": "app.orders", "reason": "r",
           "statement": "UPDATE app.orders SET amount = amount + $1 WHERE amount > $2",
           "fingerprint": "f", "rows": 288, "key_columns": ["id"], "key_sample": [[1]],
           "pid": 100, "backend_start": "2026-09-21 14:13:20+00", "created_at":
           "2026-09-21 14:13:21+00", "reviewer": None, "used_pid": None,
           "used_backend_start": None, "used_at": None}


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[CollectorProcess, str]]:
    work = make_workdir("pgwarden-approvals-collector-")
    store = str(work / "collector.db")
    c = CollectorProcess(store, log_path=work / "collector.log").start()
    yield c, store
    c.stop()


def post(c: CollectorProcess, body: bytes) -> httpx.Response:
    return httpx.post(c.url + "/v1/ingest", content=body, headers={
        "Authorization": "Bearer test-token", "Content-Type": "application/msgpack"})


def agent_batch(seq: int, events: list[dict]) -> bytes:  # type: ignore[type-arg]
    return msgpack.packb({"schema_version": 1, "batch_seq": seq,
                          "agent": {"agent_id": "agent-1"}, "events": events})


def session(sid: str, pid: int, start_us: int) -> dict:  # type: ignore[type-arg]
    return {"type": "session.started", "ts_us": start_us, "session_id": sid, "backend_pid": pid,
            "backend_start_us": start_us, "user": "app_rw", "database": "app"}


def statement(sid: str, seq: int, ts: int, dur: int,
              **kw: object) -> dict:  # type: ignore[type-arg]
    return {"type": "statement.executed", "ts_us": ts, "session_id": sid, "seq": seq,
            "duration_us": dur, "protocol": "simple",
            "statement": REQUEST["statement"], **kw}


def session_entries(store: str, sid: str) -> list[dict]:  # type: ignore[type-arg]
    p = subprocess.run([sys.executable, "-m", "agent.cli", "session", sid, "--store", store,
                        "--json"], capture_output=True, text=True, check=True, cwd=ROOT)
    return [json.loads(line) for line in p.stdout.splitlines()[1:]]


def test_link_both_ways(collector: tuple[CollectorProcess, str]) -> None:
    c, store = collector
    start1 = int(1_790_000_000 * 1e6)  # 2026-09-21 14:13:20 UTC, as in REQUEST
    start2 = start1 + 60_000_000
    used_at = start2 + 5_000_300
    assert post(c, agent_batch(1, [
        session("s1", 100, start1 + 700),  # the agent's start differs a little from PG's
        statement("s1", 1, start1 + 1_000_000, 9_000, sqlstate="PW002", rule="max_rows",
                  flags=["approval_required"],
                  error_message="pgwarden: UPDATE on table app.orders requires approval "
                                "(rule max_rows): approval request 42"),
        session("s2", 200, start2),
        statement("s2", 1, start2 + 4_000_000, 100, command_tag="SELECT"),
        statement("s2", 2, start2 + 5_000_000, 1_000, command_tag="UPDATE", rows=288),
        statement("s2", 3, start2 + 5_002_000, 100, command_tag="COMMIT"),
    ])).status_code == 200
    used = {**REQUEST, "status": "used", "reviewer": "bob", "used_pid": 200,
            "used_backend_start": "2026-09-21 14:14:20+00",
            "used_at": "2026-09-21 14:14:25.0003+00"}
    hook = Webhook("collector", "collector", c.url, "test-token")
    for eid, (event, req) in enumerate([("requested", REQUEST), ("used", used)], start=1):
        body, headers = render(hook, eid, {"event": f"approval.{event}", "database": "app",
                                           "at": req["used_at"] or req["created_at"],
                                           "request": req})
        r = httpx.post(hook.url, content=body, headers=headers)
        assert r.status_code == 200 and r.json()["accepted"] == 1
        again = httpx.post(hook.url, content=body, headers=headers)  # a resend: dropped
        assert again.json() == {"accepted": 0, "duplicate": True}
    assert used_at == int(1_790_000_065.0003 * 1e6)

    [refused] = [e for e in session_entries(store, "s1") if e.get("approval")]
    link = refused["approval"]
    assert (link["request_id"], link["role"], link["status"], link["reviewer"]) == \
        (42, "requested", "used", "bob")
    assert (link["approved_run"]["session_id"], link["approved_run"]["seq"]) == ("s2", 2)
    [run] = [e for e in session_entries(store, "s2") if e.get("approval")]
    assert run["seq"] == 2 and run["approval"]["role"] == "approved_run"
    assert run["approval"]["requested_in"]["session_id"] == "s1"


def test_approval_events_are_validated(collector: tuple[CollectorProcess, str]) -> None:
    c, _ = collector
    bad = msgpack.packb({"schema_version": 1, "batch_seq": 1,
                         "agent": {"agent_id": "pgwarden-approvals/x"},
                         "events": [{"type": "approval", "ts_us": T0, "event": "used"}]})
    r = post(c, bad)
    assert r.status_code == 422 and "request_id" in r.json()["error"]

"""Capture link: the statement refused pending approval (captured by the eBPF agent, PW002) and
the later approved run, in another session, are linked both ways in `pgwarden session ID`,
with approval events relayed to the collector by `pgwarden notify run --collector`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from agent.db.testing import GuardedCluster
from agent.pgcluster import PG_BIN, make_workdir, wait_for
from agent.stack import AgentProcess, CollectorProcess
from tests.approvals_helpers import (
    BIG_UPDATE,
    ROOT,
    RelayProcess,
    approve,
    request_id,
    start_cluster,
)
from tests.oracle import captured

pytestmark = [pytest.mark.pg, pytest.mark.bpf]


@dataclass
class Stack:
    gc: GuardedCluster
    collector: CollectorProcess
    agent: AgentProcess
    store: str
    work: Path


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    work = make_workdir("pgwarden-approvals-link-")
    gc = start_cluster()
    store = str(work / "collector.db")
    collector = CollectorProcess(store, log_path=work / "collector.log").start()
    agent = AgentProcess(collector.url, work / "agent", ports=(gc.cluster.port,),
                         log_path=work / "agent.log").start()
    yield Stack(gc, collector, agent, store, work)
    agent.stop()
    collector.stop()
    gc.destroy()


def session_json(store: str, session_id: str) -> list[dict]:  # type: ignore[type-arg]
    p = subprocess.run([sys.executable, "-m", "agent.cli", "session", session_id, "--store",
                        store, "--json"], capture_output=True, text=True, check=True, cwd=ROOT)
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def test_refused_statement_and_approved_run_are_linked(stack: Stack) -> None:
    gc = stack.gc
    db = gc.new_db()
    relay = RelayProcess(gc.dsn(db), ["--collector", stack.collector.url],
                         stack.work / "relay.log")
    try:
        out = subprocess.run([str(PG_BIN / "psql"), "-X", "-A", "-t", "-d", gc.dsn(db, "app_rw"),
                              "-c", "SELECT pg_backend_pid()", "-c", BIG_UPDATE],
                             capture_output=True, text=True)
        refused_pid = int(out.stdout.split()[0])
        rid = request_id(out.stderr)
        approve(gc, db, rid)
        with psycopg.connect(gc.dsn(db, "app_rw")) as conn:
            run_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert conn.execute(BIG_UPDATE).rowcount == 288

        def linked() -> tuple[dict, dict] | None:  # type: ignore[type-arg]
            rows = captured(stack.store)
            refused = [r for r in rows if r["backend_pid"] == refused_pid
                       and r["sqlstate"] == "PW002"]
            ran = [r for r in rows if r["backend_pid"] == run_pid
                   and r["command_tag"] == "UPDATE"]
            if not (refused and ran):
                return None
            first = [e for e in session_json(stack.store, refused[0]["session_id"])
                     if e.get("approval")]
            second = [e for e in session_json(stack.store, ran[0]["session_id"])
                      if e.get("approval")]
            if not (first and second and first[0]["approval"].get("approved_run")):
                return None
            return first[0], second[0]

        found = wait_for(linked, timeout=60, interval=0.5)
        assert found, "not linked: " + (stack.work / "relay.log").read_text()[-2000:]
    finally:
        relay.stop()
    blocked, run = found
    assert blocked["flags"] == ["approval_required"] and blocked["rule"] == "max_rows"
    assert f"approval request {rid}" in blocked["error_message"]
    assert blocked["approval"]["request_id"] == rid
    assert blocked["approval"]["status"] == "used"
    assert blocked["approval"]["approved_run"]["session_id"] == run["session_id"]
    assert blocked["approval"]["approved_run"]["seq"] == run["seq"]
    assert run["approval"] == {"request_id": rid, "role": "approved_run",
                               "reviewer": "reviewer",
                               "requested_in": {"session_id": blocked["session_id"],
                                                "seq": blocked["seq"],
                                                "at": blocked["started_at"]}}
    text = subprocess.run([sys.executable, "-m", "agent.cli", "session", run["session_id"],
                           "--store", stack.store], capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout
    assert f"approved run of approval request {rid}" in " ".join(text.split())

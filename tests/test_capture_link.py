"""The capture agent and the extension meet: statements pgwarden refused are marked blocked.

Real PostgreSQL with the pgwarden extension and its test policy (agent.db.testing), real probes,
real collector. The agent reads pgwarden's SQLSTATE (PW001) and the rule from the ErrorResponse
constraint-name field, over both protocols; `pgwarden statements --blocked` lists them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.db.testing import GuardedCluster
from agent.pgcluster import wait_for
from agent.stack import AgentProcess, CollectorProcess
from tests.oracle import captured

pytestmark = [pytest.mark.pg, pytest.mark.bpf]


def test_blocked_statements_are_marked_with_their_rule(gc: GuardedCluster,
                                                       tmp_path: Path) -> None:
    db = gc.new_db()
    collector = CollectorProcess(str(tmp_path / "c.db"), log_path=tmp_path / "c.log").start()
    agent = AgentProcess(collector.url, tmp_path / "agent", ports=(gc.cluster.port,),
                         log_path=tmp_path / "a.log").start()
    try:
        simple = gc.run_psql(db, "app_rw", "DELETE FROM app.orders")
        extended = gc.run_extended(db, "app_rw", "UPDATE app.customers SET note = %s", ("x",))
        allowed = gc.run_psql(db, "app_rw", "DELETE FROM app.orders WHERE id = 5")
        assert simple.sqlstate == extended.sqlstate == "PW001" and allowed.ok

        def arrived() -> list[dict]:  # type: ignore[type-arg]
            rows = captured(collector.store, "--database", db)
            return rows if sum(r["command_tag"] == "DELETE" or r["sqlstate"] == "PW001"
                               for r in rows) >= 3 else []

        rows = wait_for(arrived, timeout=30, interval=0.25)
        time.sleep(0.5)
        blocked = captured(collector.store, "--database", db, "--blocked")
    finally:
        agent.stop()
        collector.stop()
    assert rows
    assert {(r["protocol"], r["statement"], r["rule"]) for r in blocked} == {
        ("simple", "DELETE FROM app.orders", "require_where"),
        ("extended", "UPDATE app.customers SET note = $1", "require_where"),
    }
    assert all("blocked" in r["flags"] and r["sqlstate"] == "PW001" for r in blocked)
    ok = [r for r in rows if r["statement"] == "DELETE FROM app.orders WHERE id = $1"]
    assert len(ok) == 1 and ok[0]["rows"] == 1 and not ok[0].get("rule")

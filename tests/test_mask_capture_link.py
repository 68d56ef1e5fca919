"""The capture link: session.attested events (docs/events.md) through a real collector (SQLite
and PostgreSQL stores), then `pgwarden statements --masked` and `pgwarden session ID` show who
read masked columns, and which.

Sessions: M (the AI agent, masked; attested twice: the later event wins), U (billing, same
role, not masked), N (never attested), and a statement of M that touches no masked table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import main
from tests.test_collector_process import (
    BASE_US,
    CollectorProcess,
    batch,
    hermetic_env,
    new_pg_database,
    post,
    session_started,
    statement,
)

M, U, N = "a0a0a0a0a0a0a001", "b0b0b0b0b0b0b002", "c0c0c0c0c0c0c003"
COLUMNS = ["app.customers.email", "app.customers.full_name", 'app."Orders".card']


def attested(sid: str, ts_us: int, identity: str | None, masked: bool,
             columns: list[str]) -> dict[str, Any]:
    return {"type": "session.attested", "ts_us": ts_us, "session_id": sid, "attested": True,
            "identity": identity, "session_user": "app", "masked": masked,
            "masked_columns": columns if masked else []}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql",
                                                                marks=pytest.mark.pg)])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp(f"masked-{request.param}")
    location = (str(work / "collector.db") if request.param == "sqlite"
                else new_pg_database(request.getfixturevalue("pg_cluster")))
    collector = CollectorProcess(location, work / "collector").start()
    batches = [
        [session_started(M, BASE_US, user="app", backend_pid=11),
         attested(M, BASE_US + 1, "ai-agent", True, COLUMNS[:1]),
         statement(M, 1, BASE_US + 10, "SELECT full_name, email FROM customers WHERE id = $1"),
         session_started(U, BASE_US + 5, user="app", backend_pid=12),
         attested(U, BASE_US + 6, "billing", False, []),
         statement(U, 1, BASE_US + 20, "SELECT full_name, email FROM customers WHERE id = $1")],
        [attested(M, BASE_US + 30, "ai-agent", True, COLUMNS),  # re-attested: replaces
         statement(M, 2, BASE_US + 40, 'SELECT card FROM app."Orders"'),
         statement(M, 3, BASE_US + 50, "SELECT count(*) FROM orders_archive"),
         statement(M, 4, BASE_US + 60, "SELECT * FROM pgwarden_mask_app.customers"),
         session_started(N, BASE_US + 70, user="app", backend_pid=13),
         statement(N, 1, BASE_US + 80, "SELECT email FROM customers")],
    ]
    try:
        for seq, events in enumerate(batches, start=1):
            response = post(collector.url, batch(events, seq=seq))
            assert response.status_code == 200, response.text
    finally:
        assert collector.stop() == 0
    return location


def run(tmp_path: Path, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=hermetic_env(tmp_path, COLUMNS="240"),
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_statements_masked_lists_who_saw_which_masked_columns(store: str,
                                                              tmp_path: Path) -> None:
    rows = [json.loads(line) for line in run(tmp_path, "statements", "--store", store,
                                             "--masked", "--json").splitlines()]
    got = [(r["session_id"], r["seq"], r["masked_columns"], r["identity"], r["masked"])
           for r in rows]
    assert got == [
        (M, 1, ["app.customers.email", "app.customers.full_name"], "ai-agent", True),
        (M, 2, ['app."Orders".card'], "ai-agent", True),
        (M, 4, ["app.customers.email", "app.customers.full_name"], "ai-agent", True)]
    everything = [json.loads(line) for line in run(tmp_path, "statements", "--store", store,
                                                   "--json").splitlines()]
    unmasked = {(r["session_id"], r["seq"]): r for r in everything}
    assert unmasked[(U, 1)]["masked_columns"] == [] and unmasked[(U, 1)]["identity"] == "billing"
    assert unmasked[(U, 1)]["masked"] is False
    assert unmasked[(N, 1)]["masked"] is None and unmasked[(N, 1)]["identity"] is None
    table = run(tmp_path, "statements", "--store", store, "--masked")
    assert "masked: app.customers.email, app.customers.full_name" in table


def test_session_view_shows_identity_and_masking(store: str, tmp_path: Path) -> None:
    out = run(tmp_path, "session", M, "--store", store)
    assert "attested as" in out and "ai-agent" in out
    assert "yes: app.customers.email" in out
    assert "identity attested: ai-agent; masked" in out
    lines = [json.loads(line) for line in run(tmp_path, "session", M, "--store", store,
                                              "--json").splitlines()]
    assert lines[0]["kind"] == "session" and lines[0]["masked_columns"] == COLUMNS
    kinds = [e["kind"] for e in lines[1:]]  # the latest registration, where it happened
    assert kinds[:4] == ["session.started", "statement", "session.attested", "statement"]
    mark = lines[1 + kinds.index("session.attested")]
    assert mark["identity"] == "ai-agent" and mark["masked_columns"] == COLUMNS
    billing = run(tmp_path, "session", U, "--store", store)
    assert "no (real values)" in billing and "billing" in billing
    sessions = [json.loads(line) for line in run(tmp_path, "sessions", "--store", store,
                                                 "--json").splitlines()]
    assert {s["session_id"]: s["masked"] for s in sessions} == {M: True, U: False, N: None}

"""Ingest over real HTTP into a real store (SQLite file and PostgreSQL): what is accepted is
stored once and queryable; what is refused gets the right status, a clear message, and leaves
the store exactly as it was."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest

from agent.collector import query
from agent.collector.storage import open_store
from agent.pgcluster import PgCluster, wait_for
from agent.shipping import Shipper
from tests.test_collector_process import (
    BASE_US,
    STORE_KINDS,
    TOKEN,
    CollectorProcess,
    batch,
    new_pg_database,
    new_store_location,
    post,
    row_counts,
    session_ended,
    session_started,
    statement,
)


@pytest.fixture(params=STORE_KINDS)
def collector(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CollectorProcess]:
    """A real collector process on a fresh store (SQLite file, PostgreSQL database)."""
    proc = CollectorProcess(new_store_location(request, tmp_path), tmp_path / "collector").start()
    yield proc
    proc.stop()


def test_valid_batch_is_stored_and_queryable(collector: CollectorProcess) -> None:
    events = [
        session_started("s1", BASE_US, user="alice", database="shop", client={
            "pid": 4242, "uid": 1000, "user": "alice", "exe": "/usr/bin/python3",
            "cmdline": "python3 app.py", "comm": "python3", "cgroup": "/system.slice/app.service",
            "systemd_unit": "app.service", "container_id": None}),
        statement("s1", 1, BASE_US + 10, "SELECT * FROM public.orders WHERE id = $1",
                  fingerprint="0123456789abcdef"),
        statement("s1", 2, BASE_US + 20, "DELETE FROM orders", command_tag=None, rows=None,
                  sqlstate="PW001", error_message="blocked", error_severity="ERROR",
                  rule="no_delete_without_where", flags=["blocked"]),
        {"type": "capture.gap", "ts_us": BASE_US + 25, "session_id": "s1",
         "direction": "backend", "bytes": 512, "reason": "dropped"},
        {"type": "cancel.requested", "ts_us": BASE_US + 26, "target_backend_pid": 1000},
        session_ended("s1", BASE_US + 30, statements=2),
        {"type": "agent.stats", "ts_us": BASE_US + 31, "events": 7, "statements": 2,
         "sessions": 1, "drops": {"ring_full": 0}, "spool_bytes": 0, "spool_batches": 0},
    ]
    response = post(collector.url, batch(events))
    assert response.status_code == 200
    assert response.json() == {"accepted": 7, "duplicate": False}
    counts = row_counts(collector.store)
    assert {k: counts[k] for k in ("agents", "ingested_batches", "sessions", "statements",
                                   "statement_tables", "statement_flags", "gaps", "cancels",
                                   "agent_stats")} == {
        "agents": 1, "ingested_batches": 1, "sessions": 1, "statements": 2,
        "statement_tables": 2, "statement_flags": 1, "gaps": 1, "cancels": 1, "agent_stats": 1}

    with open_store(collector.store, migrate=False) as store:
        rows = list(query.find_statements(store))
        assert [r["seq"] for r in rows] == [1, 2]
        assert rows[0]["user"] == "alice" and rows[0]["client_exe"] == "/usr/bin/python3"
        assert rows[0]["client_systemd_unit"] == "app.service"
        assert rows[0]["tables"] == ["public.orders"]
        assert rows[1]["flags"] == ["blocked"] and rows[1]["rule"] == "no_delete_without_where"
        timeline = query.session_timeline(store, "s1")
        kinds = [e["kind"] for e in timeline.entries]
        assert kinds == ["session.started", "statement", "statement", "gap", "cancel",
                         "session.ended"]
        assert timeline.session["end_statements"] == 2
        assert timeline.session["statements_stored"] == 2


def test_duplicate_batch_is_acknowledged_and_not_stored_twice(
        collector: CollectorProcess) -> None:
    body = batch([session_started("s1", BASE_US), statement("s1", 1, BASE_US + 1)], seq=7)
    assert post(collector.url, body).json() == {"accepted": 2, "duplicate": False}
    before = row_counts(collector.store)
    replay = post(collector.url, body)
    assert replay.status_code == 200
    assert replay.json() == {"accepted": 0, "duplicate": True}
    assert row_counts(collector.store) == before
    # The same batch_seq from another agent is a different batch.
    other = post(collector.url, batch([statement("s2", 1, BASE_US)], seq=7, agent_id="agent-2"))
    assert other.json() == {"accepted": 1, "duplicate": False}


def test_session_upsert_keeps_everything(collector: CollectorProcess) -> None:
    # Statements before their session.started, the start sent twice, the end in another batch.
    assert post(collector.url, batch([statement("s9", 1, BASE_US + 5)], seq=1)).status_code == 200
    started = session_started("s9", BASE_US, user="carol", application_name="report")
    assert post(collector.url, batch([started, statement("s9", 2, BASE_US + 6)],
                                     seq=2)).status_code == 200
    again = session_started("s9", BASE_US, user="carol", application_name=None)
    assert post(collector.url, batch([again], seq=3)).status_code == 200
    assert post(collector.url, batch([session_ended("s9", BASE_US + 9)], seq=4)).status_code == 200
    with open_store(collector.store, migrate=False) as store:
        sessions = list(query.find_sessions(store))
        assert len(sessions) == 1
        s = sessions[0]
        assert (s["user"], s["application_name"], s["statements_stored"]) == ("carol", "report", 2)
        assert (s["started_us"], s["ended_us"], s["first_seen_us"]) == (
            BASE_US, BASE_US + 9, BASE_US)
        assert s["end_reason"] == "terminate"


def _refused(collector: CollectorProcess, body: bytes | dict, status: int, *needles: str,
             token: str | None = "default") -> None:
    before = row_counts(collector.store)
    response = (post(collector.url, body) if token == "default"
                else post(collector.url, body, token=token))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    for needle in needles:
        assert needle in error
    assert row_counts(collector.store) == before


def test_malformed_msgpack_is_400(collector: CollectorProcess) -> None:
    _refused(collector, b"\xc1\x00\x01", 400, "not valid MessagePack")
    _refused(collector, msgpack.packb(batch([]))[:-3], 400, "not valid MessagePack")
    _refused(collector, b"", 400, "empty body")


def test_body_that_is_not_a_map_is_400(collector: CollectorProcess) -> None:
    _refused(collector, msgpack.packb([1, 2, 3]), 400, "MessagePack array, expected a map")
    _refused(collector, msgpack.packb("hello"), 400, "MessagePack str, expected a map")


def test_wrong_schema_version_is_422(collector: CollectorProcess) -> None:
    _refused(collector, batch([statement("s1", 1, BASE_US)], schema_version=2), 422,
             "schema_version 2 is not supported", "accepts schema_version 1")
    _refused(collector, batch([], schema_version="1"), 422, "'schema_version' must be the int 1")


def test_bad_events_are_422_naming_index_and_key(collector: CollectorProcess) -> None:
    good = statement("s1", 1, BASE_US)
    # One bad event spoils the whole batch: the good one before it is not stored either.
    _refused(collector, batch([good, statement("s1", "two", BASE_US)]), 422,
             "event 1 (statement.executed): key 'seq' must be an int (64-bit signed), got str")
    missing = statement("s1", 2, BASE_US)
    del missing["session_id"]
    _refused(collector, batch([good, missing]), 422,
             "event 1 (statement.executed): missing required key 'session_id'")
    _refused(collector, batch([good, {"type": "statement.exec", "ts_us": 1}]), 422,
             "event 1: unknown type 'statement.exec'")
    _refused(collector, batch([good, statement("s1", 3, BASE_US, flags=["ok", 3])]), 422,
             "key 'flags' must be an array of str")
    _refused(collector, batch([good, statement("s1", 3, BASE_US, rows=True)]), 422,
             "key 'rows' must be an int", "got bool")
    _refused(collector, batch([good, statement("s1", 3, 2**63)]), 422, "key 'ts_us'")
    _refused(collector, batch([good], batch_seq=0), 422, "'batch_seq' must be an int >= 1")
    _refused(collector, batch([good], agent={"host": "x"}), 422, "agent.agent_id")


def test_missing_or_wrong_token_is_401(collector: CollectorProcess) -> None:
    body = batch([statement("s1", 1, BASE_US)])
    _refused(collector, body, 401, "missing 'Authorization: Bearer <token>' header", token=None)
    _refused(collector, body, 401, "wrong bearer token", token="not-the-token")
    before = row_counts(collector.store)
    basic = httpx.post(f"{collector.url}/v1/ingest", content=msgpack.packb(body), timeout=60,
                       headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert basic.json()["error"] == "Authorization must use the Bearer scheme"
    assert row_counts(collector.store) == before


def test_body_over_16_mib_is_413(collector: CollectorProcess) -> None:
    big = statement("s1", 1, BASE_US, "SELECT '" + "x" * (16 * 1024 * 1024) + "'")
    _refused(collector, batch([big]), 413, "larger than the limit of 16777216 bytes")


@pytest.mark.parametrize("text", ["SELECT 'a\x00b'", "SELECT '\udcff'"])
def test_strings_postgresql_cannot_hold_are_replaced_not_refused(
        collector: CollectorProcess, text: str) -> None:
    # NUL (and, from a lenient packer, invalid UTF-8) becomes U+FFFD instead of a 5xx loop.
    packed = msgpack.packb(batch([statement("s1", 1, BASE_US, text)]),
                           unicode_errors="surrogateescape")
    response = post(collector.url, packed)
    assert response.status_code == 200, response.text
    with open_store(collector.store, migrate=False) as store:
        [row] = list(query.find_statements(store))
    assert "\ufffd" in row["statement"]


@pytest.mark.pg
def test_store_outage_answers_503_and_agents_deliver_once_it_is_back(tmp_path: Path) -> None:
    # Its own cluster, stopped mid-test; not under tmp_path, which the `postgres` user cannot reach.
    cluster = PgCluster(Path(tempfile.mkdtemp(prefix="pgwarden-store-")))
    cluster.start()
    try:
        url = new_pg_database(cluster)
        proc = CollectorProcess(url, tmp_path / "collector").start()
        shipper = Shipper(proc.url, TOKEN, tmp_path / "agent", flush_interval_s=0.05,
                          retry_initial_s=0.1, retry_max_s=0.5)
        try:
            assert post(proc.url, batch([statement("s1", 1, BASE_US)], seq=1)).status_code == 200
            cluster.stop()
            down = post(proc.url, batch([statement("s1", 2, BASE_US)], seq=2))
            assert down.status_code == 503
            assert down.json()["error"].startswith("store unavailable, retry later")
            health = httpx.get(f"{proc.url}/v1/health", timeout=60)
            assert health.status_code == 503 and health.json()["status"] == "unavailable"

            shipper.start()
            for seq in range(3, 8):
                shipper.submit(statement("s1", seq, BASE_US + seq))
            stats = wait_for(lambda: (s := shipper.stats())["last_error"] and s, timeout=90)
            assert stats and "collector answered 503" in stats["last_error"]
            assert shipper.stats()["spool_batches"] >= 1

            cluster.start()
            assert post(proc.url, batch([statement("s1", 2, BASE_US)], seq=2)).status_code == 200
            done = wait_for(lambda: shipper.stats()["events_sent"] == 5, timeout=90)
            assert done, shipper.stats()
        finally:
            shipper.stop(timeout=30)
            assert proc.stop() == 0
        with open_store(url, migrate=False) as store:
            assert [r["seq"] for r in query.find_statements(store)] == [1, 2, 3, 4, 5, 6, 7]
    finally:
        cluster.destroy()

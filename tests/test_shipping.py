"""The agent's Shipper against a real `pgwarden collector run` subprocess and a SQLite store:
order, outages, restarts, lost responses, the spool bound and rejected batches."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from agent.collector import schema
from agent.collector.storage import open_store
from agent.pgcluster import free_port, wait_for
from agent.shipping import Shipper, ShipperError
from tests.test_collector_process import (
    BASE_US,
    TOKEN,
    CollectorProcess,
    row_counts,
    statement,
)

WAIT_S = 90  # liveness guard only: how long to wait before declaring that nothing happens


def _shipper(url: str, state: Path, **kwargs: Any) -> Shipper:
    options: dict[str, Any] = {"flush_interval_s": 0.05, "retry_initial_s": 0.1,
                               "retry_max_s": 0.5, "request_timeout_s": 10}
    options.update(kwargs)
    return Shipper(url, options.pop("token", TOKEN), state, **options)


def _submit(shipper: Shipper, first: int, last: int, text: str = "SELECT $1") -> None:
    for seq in range(first, last + 1):
        shipper.submit(statement("s1", seq, BASE_US + seq, text))


def _stored_seqs(store: str) -> list[int]:
    with open_store(store, migrate=False) as opened, opened.connect() as conn:
        t = schema.statements
        return [r[0] for r in conn.execute(select(t.c.seq).order_by(t.c.id))]


def _until(shipper: Shipper, check: Any) -> dict[str, Any]:
    stats = wait_for(lambda: (s := shipper.stats()) and check(s) and s, timeout=WAIT_S)
    assert stats, f"condition never met; stats: {shipper.stats()}"
    return stats  # type: ignore[no-any-return]


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "collector.db")


def test_events_arrive_in_order(store: str, tmp_path: Path) -> None:
    collector = CollectorProcess(store, tmp_path / "c").start()
    shipper = _shipper(collector.url, tmp_path / "state", batch_max_events=1000)
    try:
        shipper.start()
        _submit(shipper, 1, 3500)
        stats = _until(shipper, lambda s: s["events_sent"] == 3500)
        assert stats["batches_sent"] >= 4 and stats["spool_batches"] == 0
        assert stats["collector_up"] is True and stats["dropped"] == {}
        assert stats["events_submitted"] == 3500
    finally:
        shipper.stop(timeout=30)
        collector.stop()
    assert _stored_seqs(store) == list(range(1, 3501))
    assert not list((tmp_path / "state" / "spool").iterdir())


def test_collector_outage_then_restart_delivers_everything_once_in_order(
        store: str, tmp_path: Path) -> None:
    port = free_port()
    collector = CollectorProcess(store, tmp_path / "c", port=port).start()
    shipper = _shipper(collector.url, tmp_path / "state", batch_max_events=200)
    try:
        shipper.start()
        _submit(shipper, 1, 500)
        _until(shipper, lambda s: s["events_sent"] == 500)
        assert collector.stop() == 0

        # The collector stays away for ~6 s while the agent keeps capturing.
        outage_end = time.monotonic() + 6
        seq = 500
        while time.monotonic() < outage_end:
            _submit(shipper, seq + 1, seq + 100)
            seq += 100
            time.sleep(0.2)
        down = _until(shipper, lambda s: s["collector_up"] is False and s["spool_batches"] > 0)
        assert "cannot reach the collector" in down["last_error"]

        collector.start()  # same port, same store
        _submit(shipper, seq + 1, seq + 50)
        seq += 50
        stats = _until(shipper, lambda s: s["events_sent"] == seq and s["spool_batches"] == 0)
        assert stats["collector_up"] is True and stats["dropped"] == {}
    finally:
        shipper.stop(timeout=30)
        collector.stop()
    assert _stored_seqs(store) == list(range(1, seq + 1))


def test_restarted_agent_replays_its_spool_and_continues_the_sequence(
        store: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet
    state = tmp_path / "state"
    first = _shipper(f"http://127.0.0.1:{port}", state, batch_max_events=100)
    first.start()
    _submit(first, 1, 450)
    _until(first, lambda s: s["spool_batches"] == 5 and s["collector_up"] is False)
    first.stop(timeout=5)
    left = first.stats()
    assert left["events_sent"] == 0 and left["spool_batches"] == 5
    assert left["last_batch_seq"] == 5
    assert len(list((state / "spool").glob("*.msgpack"))) == 5

    collector = CollectorProcess(store, tmp_path / "c", port=port).start()
    second = _shipper(collector.url, state, batch_max_events=100)
    try:
        second.start()
        assert second.stats()["agent_id"] == left["agent_id"]
        _submit(second, 451, 460)
        stats = _until(second, lambda s: s["events_sent"] == 460 and s["spool_batches"] == 0)
        assert stats["last_batch_seq"] == 6
    finally:
        second.stop(timeout=30)
        collector.stop()
    assert _stored_seqs(store) == list(range(1, 461))
    with open_store(store, migrate=False) as opened, opened.connect() as conn:
        t = schema.ingested_batches
        assert [r[0] for r in conn.execute(select(t.c.batch_seq).order_by(t.c.batch_seq))] == [
            1, 2, 3, 4, 5, 6]


def test_batch_acknowledged_but_response_lost_is_stored_once(store: str, tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    offline = _shipper(f"http://127.0.0.1:{port}", state)
    offline.start()
    _submit(offline, 1, 20)
    _until(offline, lambda s: s["spool_batches"] == 1)
    offline.stop(timeout=5)
    [spooled] = list((state / "spool").glob("*.msgpack"))
    kept = tmp_path / spooled.name
    shutil.copy(spooled, kept)

    collector = CollectorProcess(store, tmp_path / "c", port=port).start()
    try:
        online = _shipper(collector.url, state)
        online.start()
        _until(online, lambda s: s["events_sent"] == 20)
        online.stop(timeout=30)
        # The response was "lost": the agent still has the file and sends it again.
        shutil.copy(kept, spooled)
        replay = _shipper(collector.url, state)
        replay.start()
        stats = _until(replay, lambda s: s["batches_sent"] == 1)
        replay.stop(timeout=30)
        assert stats["batches_duplicate"] == 1 and stats["spool_batches"] == 0
    finally:
        collector.stop()
    assert _stored_seqs(store) == list(range(1, 21))
    assert row_counts(store)["ingested_batches"] == 1
    assert not spooled.exists()


def test_spool_bound_drops_new_batches_and_counts_them(store: str, tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    bound = 64 * 1024
    offline = _shipper(f"http://127.0.0.1:{port}", state, batch_max_events=50,
                       max_spool_bytes=bound, max_batch_bytes=32 * 1024,
                       max_pending_events=10_000)
    offline.start()
    _submit(offline, 1, 3000, text="SELECT * FROM orders WHERE note = $1 -- " + "x" * 60)
    offline.stop(timeout=2)
    stats = offline.stats()
    spooled_events = sum(int(p.name.split("-")[1].split(".")[0])
                         for p in (state / "spool").glob("*.msgpack"))
    assert set(stats["dropped"]) == {"spool_full"} and stats["dropped"]["spool_full"] > 0
    assert stats["spool_bytes"] <= bound
    assert spooled_events + stats["dropped"]["spool_full"] == 3000

    collector = CollectorProcess(store, tmp_path / "c", port=port).start()
    try:
        online = _shipper(collector.url, state)
        online.start()
        _until(online, lambda s: s["events_sent"] == spooled_events)
        online.stop(timeout=30)
    finally:
        collector.stop()
    stored = _stored_seqs(store)
    assert len(stored) == spooled_events and stored == sorted(stored) and stored[0] == 1


def test_rejected_batch_is_moved_aside_without_blocking_later_ones(
        store: str, tmp_path: Path) -> None:
    collector = CollectorProcess(store, tmp_path / "c").start()
    state = tmp_path / "state"
    shipper = _shipper(collector.url, state, batch_max_events=1)
    try:
        shipper.start()
        _submit(shipper, 1, 2)
        _until(shipper, lambda s: s["events_sent"] == 2)
        shipper.submit(statement("s1", "not-an-int", BASE_US))  # the collector answers 422
        _submit(shipper, 3, 5)
        stats = _until(shipper, lambda s: s["events_sent"] == 5 and s["spool_batches"] == 0)
        assert stats["batches_rejected"] == 1 and stats["events_rejected"] == 1
        assert "rejected with 422" in stats["last_error"]
        assert "key 'seq' must be an int" in stats["last_error"]
    finally:
        shipper.stop(timeout=30)
        collector.stop()
    assert [p.name for p in (state / "rejected").iterdir()] == [
        "00000000000000000003-1.msgpack"]
    assert _stored_seqs(store) == [1, 2, 3, 4, 5]


def test_wrong_token_keeps_batches_spooled_until_fixed(store: str, tmp_path: Path) -> None:
    collector = CollectorProcess(store, tmp_path / "c").start()
    state = tmp_path / "state"
    try:
        wrong = _shipper(collector.url, state, token="wrong")
        wrong.start()
        _submit(wrong, 1, 10)
        stats = _until(wrong, lambda s: s["collector_up"] is False)
        wrong.stop(timeout=5)
        assert "401" in stats["last_error"] and "check the agent's token" in stats["last_error"]
        assert wrong.stats()["batches_rejected"] == 0
        assert not list((state / "rejected").iterdir())

        right = _shipper(collector.url, state)
        right.start()
        _until(right, lambda s: s["events_sent"] == 10)
        right.stop(timeout=30)
    finally:
        collector.stop()
    assert _stored_seqs(store) == list(range(1, 11))


def test_unserializable_event_is_counted_and_the_rest_ships(store: str, tmp_path: Path) -> None:
    collector = CollectorProcess(store, tmp_path / "c").start()
    shipper = _shipper(collector.url, tmp_path / "state")
    try:
        shipper.start()
        _submit(shipper, 1, 2)
        shipper.submit({"type": "statement.executed", "ts_us": 1, "bad": object()})
        _submit(shipper, 3, 4)
        stats = _until(shipper, lambda s: s["events_sent"] == 4)
        assert stats["dropped"] == {"unserializable": 1}
    finally:
        shipper.stop(timeout=30)
        collector.stop()
    assert _stored_seqs(store) == [1, 2, 3, 4]


def test_one_shipper_per_state_directory(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    first = _shipper(url, tmp_path / "state")
    first.start()
    try:
        with pytest.raises(ShipperError, match="used by another running shipper"):
            _shipper(url, tmp_path / "state").start()
    finally:
        first.stop(timeout=1)
    after = _shipper(url, tmp_path / "state")
    after.start()  # the lock is released by stop()
    after.stop(timeout=1)
    assert after.stats()["agent_id"] == first.stats()["agent_id"]


def test_submit_after_stop_is_counted_not_lost_silently(tmp_path: Path) -> None:
    shipper = _shipper(f"http://127.0.0.1:{free_port()}", tmp_path / "state")
    shipper.start()
    shipper.stop(timeout=1)
    shipper.submit(statement("s1", 1, BASE_US))
    assert shipper.stats()["dropped"] == {"stopped": 1}

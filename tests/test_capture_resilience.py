"""Capture when things are not tidy: an agent started mid-session, an agent restarted, a collector
that goes away under load, the syscall fallback, and `pgwarden agent status`.

Real PostgreSQL, real probes, real collector; the server's statement log is the oracle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.pgcluster import PG_BIN, PgCluster, make_workdir, wait_for
from agent.stack import AgentProcess, CollectorProcess
from tests.oracle import captured, compare, server_statements

pytestmark = [pytest.mark.pg, pytest.mark.bpf]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    work = make_workdir("pgwarden-resil-")
    c = PgCluster(work / "pg", ssl=True, settings={"log_statement": "'all'"}).start()
    c.psql("CREATE DATABASE bench")
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(c.port), "PGUSER": "postgres"}
    subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", "1", "bench"], env=env, check=True,
                   capture_output=True)
    yield c
    c.destroy()


def session_rows(store: str) -> list[dict]:  # type: ignore[type-arg]
    p = subprocess.run([sys.executable, "-m", "agent.cli", "sessions", "--store", store, "--json"],
                       capture_output=True, text=True, check=True)
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def timeline(store: str, session_id: str) -> list[dict]:  # type: ignore[type-arg]
    p = subprocess.run([sys.executable, "-m", "agent.cli", "session", session_id, "--store", store,
                        "--json"], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("via", ["unix", "tls"])
def test_agent_started_mid_session_marks_the_gap(cluster: PgCluster, tmp_path: Path, via: str) -> None:
    """Sessions open before the agent: later statements captured, the gap marked.

    A backend waiting for input waits inside secure_read, entered before the agent attached;
    the agent catches that first read below it (recvfrom). Under TLS those bytes are ciphertext,
    so the first statement after attach is reported by its result only (unknown_statement)."""
    store = str(tmp_path / "c.db")
    collector = CollectorProcess(store, log_path=tmp_path / "c.log").start()
    try:
        mid_session_scenario(cluster, collector, store, tmp_path, via)
    finally:
        collector.stop()


def mid_session_scenario(cluster: PgCluster, collector: CollectorProcess, store: str,
                         tmp_path: Path, via: str) -> None:
    dsn = cluster.dsn("bench", via="unix") if via == "unix" else cluster.dsn("bench", sslmode="require")
    with psycopg.connect(dsn, autocommit=True, application_name="long-lived") as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT 'before the agent'")
        conn.execute("SELECT %s::int + 1", (41,), prepare=True)  # prepared server-side, unseen
        conn.execute("SELECT %s::int + 1", (41,), prepare=True)
        agent = AgentProcess(collector.url, tmp_path / "agent", capture_raw=True,
                             ports=(cluster.port,), log_path=tmp_path / "a.log").start()
        try:
            conn.execute("SELECT 'after the agent'")
            conn.execute("SELECT %s::int + 1", (1,), prepare=True)  # Bind/Execute of an unseen Parse
            conn.execute("SELECT count(*) FROM pgbench_branches")
            assert wait_for(lambda: len([r for r in captured(store) if r["backend_pid"] == pid]) >= 3,
                            timeout=20, interval=0.25)
        finally:
            status = agent.stop() or 0
        assert status == 0
    collector_rows = [r for r in captured(store) if r["backend_pid"] == pid]
    texts = [r["statement"] for r in collector_rows]
    assert "SELECT 'before the agent'" not in texts
    assert texts[-1] == "SELECT count(*) FROM pgbench_branches"
    unknown = [r for r in collector_rows if "unknown_statement" in r["flags"]]
    prepared = [r for r in unknown if r["statement_name"]]  # Bind/Execute of the unseen Parse
    assert len(prepared) == 1 and prepared[0]["statement"] is None and prepared[0]["rows"] == 1
    if via == "unix":
        assert texts[0] == "SELECT 'after the agent'"
        assert len(unknown) == 1
    else:
        assert texts[0] is None and "truncated" in collector_rows[0]["flags"]
        assert collector_rows[0]["command_tag"] == "SELECT" and collector_rows[0]["rows"] == 1
    session = [s for s in session_rows(store) if s["backend_pid"] == pid][0]
    assert session["attached_mid_session"] is True
    assert session["user"] == "postgres" and session["database"] == "bench"
    gaps = [e for e in timeline(store, session["session_id"]) if e.get("kind") == "gap"
            or e.get("type") == "capture.gap"]
    assert any(g.get("reason") == "mid_session" for g in gaps), gaps


def test_collector_outage_under_load_loses_nothing(cluster: PgCluster, tmp_path: Path) -> None:
    """Collector stopped for 30 s while pgbench runs: afterwards the store equals the oracle."""
    store = str(tmp_path / "c.db")
    collector = CollectorProcess(store, log_path=tmp_path / "c.log").start()
    agent = AgentProcess(collector.url, tmp_path / "agent", capture_raw=True,
                         ports=(cluster.port,), log_path=tmp_path / "a.log").start()
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "postgres"}
    before = set(server_statements(cluster.log_file))
    try:
        bench = subprocess.Popen([str(PG_BIN / "pgbench"), "-c", "2", "-T", "40", "-R", "100", "-n",
                                  "-M", "extended", "bench"], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(5)
        collector.stop()
        time.sleep(30)
        spooled = agent.status()["shipping"]
        collector.start()
        assert bench.wait(60) == 0
        logged = server_statements(cluster.log_file)
        pids = {p for p, rows in logged.items() if p not in before
                and any(r.sql.startswith("UPDATE pgbench_accounts") for r in rows)}
        assert len(pids) == 2
        want = sum(len(logged[p]) for p in pids)

        def arrived() -> bool:
            return sum(r["backend_pid"] in pids for r in captured(store)) >= want

        assert wait_for(arrived, timeout=120, interval=1.0)
        status = agent.status()
    finally:
        agent.stop()
        collector.stop()
    assert spooled["spool_batches"] > 0 and spooled["collector_up"] is False
    got: dict[int, list[dict]] = {}  # type: ignore[type-arg]
    for r in captured(store):
        if r["backend_pid"] in pids:
            got.setdefault(r["backend_pid"], []).append(r)
    for pid in pids:
        assert compare(logged[pid], got[pid]) == []
        keys = [(r["seq"]) for r in got[pid]]
        assert len(keys) == len(set(keys)) == len(logged[pid])  # no duplicates, no loss
    assert {k: v for k, v in status["drops"].items() if v} == {}


def test_agent_restart_mid_session_continues_capture(cluster: PgCluster, tmp_path: Path) -> None:
    store = str(tmp_path / "c.db")
    collector = CollectorProcess(store, log_path=tmp_path / "c.log").start()
    state = tmp_path / "agent"
    try:
        with psycopg.connect(cluster.dsn(via="unix"), autocommit=True) as conn:
            pid = conn.info.backend_pid
            for text in ("first agent", "second agent"):
                agent = AgentProcess(collector.url, state, capture_raw=True,
                                     ports=(cluster.port,), log_path=tmp_path / "a.log").start()
                try:
                    conn.execute(f"SELECT '{text}'")
                    time.sleep(1.5)
                finally:
                    agent.stop()
                conn.execute("SELECT 'while no agent ran'")
        texts = [r["statement"] for r in captured(store) if r["backend_pid"] == pid]
        sessions = [s for s in session_rows(store) if s["backend_pid"] == pid]
    finally:
        collector.stop()
    assert texts == ["SELECT 'first agent'", "SELECT 'second agent'"]
    assert len(sessions) == 1  # same backend, same session id across the restart


def test_syscall_fallback_captures_plaintext_and_reports_tls(cluster: PgCluster, tmp_path: Path) -> None:
    store = str(tmp_path / "c.db")
    collector = CollectorProcess(store, log_path=tmp_path / "c.log").start()
    agent = AgentProcess(collector.url, tmp_path / "agent", capture_raw=True, mode="syscall",
                         ports=(cluster.port,), log_path=tmp_path / "a.log").start()
    try:
        plain = cluster.psql("SELECT pg_backend_pid(); SELECT 'plain' AS x", via="tcp",
                             sslmode="disable").stdout.split()[0]
        unix = cluster.psql("SELECT pg_backend_pid(); SELECT 'unix' AS x", via="unix").stdout.split()[0]
        tls = cluster.psql("SELECT pg_backend_pid()", via="tcp", sslmode="require").stdout.strip()
        pids = {int(plain), int(unix)}
        wait_for(lambda: {r["backend_pid"] for r in captured(store)} >= pids, timeout=20,
                 interval=0.25)
        time.sleep(1.0)
        status = agent.status()
    finally:
        agent.stop()
        collector.stop()
    assert status["mode"] == "syscall"
    logged = server_statements(cluster.log_file)
    rows = captured(store)
    for pid in pids:
        assert compare(logged[pid], [r for r in rows if r["backend_pid"] == pid]) == []
    assert not [r for r in rows if r["backend_pid"] == int(tls)]  # ciphertext: no statement
    tls_session = [s for s in session_rows(store) if s["backend_pid"] == int(tls)]
    assert tls_session, "the TLS session itself is still recorded"


def test_port_filter_captures_only_the_named_server(cluster: PgCluster, tmp_path: Path) -> None:
    other = PgCluster(make_workdir("pgwarden-other-")).start()
    collector = CollectorProcess(str(tmp_path / "c.db"), log_path=tmp_path / "c.log").start()
    agent = AgentProcess(collector.url, tmp_path / "agent", capture_raw=True, ports=(other.port,),
                         log_path=tmp_path / "a.log").start()
    try:
        cluster.psql("SELECT 'not this server'", via="unix")
        other.psql("SELECT 'this server'", via="unix")
        assert wait_for(lambda: any(r["statement"] == "SELECT 'this server'"
                                    for r in captured(collector.store)), timeout=20, interval=0.25)
        time.sleep(1.0)
        rows = captured(collector.store)
    finally:
        agent.stop()
        collector.stop()
        other.destroy()
    assert "SELECT 'not this server'" not in {r["statement"] for r in rows}


def test_agent_status_command(cluster: PgCluster, tmp_path: Path) -> None:
    """Also the default, unfiltered agent: it captures a server it was never told about."""
    collector = CollectorProcess(str(tmp_path / "c.db"), log_path=tmp_path / "c.log").start()
    state = tmp_path / "agent"
    agent = AgentProcess(collector.url, state, log_path=tmp_path / "a.log").start()
    try:
        cluster.psql("SELECT 1", via="unix")
        time.sleep(1.5)
        p = subprocess.run([sys.executable, "-m", "agent.cli", "agent", "status", "--state-dir",
                            str(state), "--json"], capture_output=True, text=True)
        assert p.returncode == 0
        st = json.loads(p.stdout)
        assert st["running"] is True and st["counters"]["statements"] >= 1
        assert set(st["drops"]) >= {"ringbuf_full", "busy", "read_fail", "ctl_ringbuf_full"}
        table = subprocess.run([sys.executable, "-m", "agent.cli", "agent", "status", "--state-dir",
                                str(state)], capture_output=True, text=True)
        assert table.returncode == 0 and "drops: ringbuf_full" in table.stdout
    finally:
        agent.stop()
        collector.stop()
    p = subprocess.run([sys.executable, "-m", "agent.cli", "agent", "status", "--state-dir",
                        str(state)], capture_output=True, text=True)
    assert p.returncode == 1 and "NOT running" in p.stdout
    p = subprocess.run([sys.executable, "-m", "agent.cli", "agent", "status", "--state-dir",
                        str(tmp_path / "nothing")], capture_output=True, text=True)
    assert p.returncode == 3

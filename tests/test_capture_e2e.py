"""End to end on real traffic: real PostgreSQL 15, real eBPF probes, real clients, real collector.

The server's own statement log (log_statement = all) is the oracle: every statement it logged must
be in the collector, for the same backend pid, user and database, in order; with the agent
reporting zero drops. The agent runs with --capture-raw so texts can be compared verbatim.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from agent.pgcluster import PG_BIN, PgCluster, make_workdir, wait_for
from agent.stack import AgentProcess, CollectorProcess
from tests.oracle import captured, compare, server_statements

pytestmark = [pytest.mark.pg, pytest.mark.bpf]


@dataclass
class Stack:
    cluster: PgCluster
    collector: CollectorProcess
    agent: AgentProcess
    store: str
    work: Path

    def statements(self, *args: str) -> list[dict]:  # type: ignore[type-arg]
        return captured(self.store, *args)

    def wait_for_pids(self, pids: set[int], timeout: float = 30.0) -> dict[int, list[dict]]:  # type: ignore[type-arg]
        """Wait until everything the server logged for `pids` has reached the collector."""
        def done() -> dict[int, list[dict]] | None:  # type: ignore[type-arg]
            logged = server_statements(self.cluster.log_file)
            got = self.by_pid(pids)
            if all(len(got.get(p, [])) >= len(logged.get(p, [])) > 0 for p in pids):
                return got
            return None

        result = wait_for(done, timeout=timeout, interval=0.25)
        return result or self.by_pid(pids)

    def by_pid(self, pids: set[int]) -> dict[int, list[dict]]:  # type: ignore[type-arg]
        out: dict[int, list[dict]] = {}  # type: ignore[type-arg]
        for row in self.statements():
            if row["backend_pid"] in pids:
                out.setdefault(row["backend_pid"], []).append(row)
        return out

    def assert_matches_oracle(self, pids: set[int]) -> dict[int, list[dict]]:  # type: ignore[type-arg]
        got = self.wait_for_pids(pids)
        logged = server_statements(self.cluster.log_file)
        problems = [p for pid in sorted(pids) for p in compare(logged.get(pid, []), got.get(pid, []))]
        assert not problems, "\n".join(problems[:30])
        return got

    def pgbench_init(self) -> None:
        if not self.cluster.psql("SELECT to_regclass('pgbench_accounts')", dbname="bench").stdout.strip():
            self.pgbench("-i", "-q", "-s", "1")

    def pgbench(self, *args: str, dbname: str = "bench") -> None:
        env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(self.cluster.port),
               "PGUSER": "postgres"}
        subprocess.run([str(PG_BIN / "pgbench"), *args, dbname], env=env, check=True,
                       capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    work = make_workdir("pgwarden-e2e-")
    cluster = PgCluster(work / "pg", ssl=True, settings={"log_statement": "'all'"})
    cluster.start()
    cluster.psql("CREATE DATABASE bench")
    store = str(work / "collector.db")
    collector = CollectorProcess(store, log_path=work / "collector.log").start()
    # --port: only this cluster, so whatever else runs on the host cannot disturb the oracle
    agent = AgentProcess(collector.url, work / "agent", capture_raw=True, ports=(cluster.port,),
                         log_path=work / "agent.log").start()
    yield Stack(cluster, collector, agent, store, work)
    agent.stop()
    collector.stop()
    cluster.destroy()


def backend_pid(output: str) -> int:
    return int(output.strip().splitlines()[0])


def test_psql_unix_tcp_tls_match_the_server_log(stack: Stack) -> None:
    c = stack.cluster
    script = ("SELECT pg_backend_pid(); CREATE TABLE t_psql (id int, v text); "
              "INSERT INTO t_psql VALUES (1, 'a'), (2, 'b'), (3, 'c'); "
              "UPDATE t_psql SET v = 'z' WHERE id > 1; SELECT * FROM t_psql ORDER BY id; "
              "DELETE FROM t_psql WHERE id = 3; DROP TABLE t_psql")
    pids = set()
    for via, extra in (("unix", {}), ("tcp", {}), ("tcp", {"sslmode": "require"})):
        out = subprocess.run([str(PG_BIN / "psql"), "-X", "-A", "-t", "-d", c.dsn(via=via, **extra),
                              "-c", "SELECT pg_backend_pid()", "-c", script.split("; ", 1)[1]],
                             capture_output=True, text=True, check=True).stdout
        pids.add(backend_pid(out))
    got = stack.assert_matches_oracle(pids)
    for pid in pids:
        rows = got[pid]
        tags = [(r["command_tag"], r["rows"]) for r in rows]
        assert ("INSERT", 3) in tags and ("UPDATE", 2) in tags and ("DELETE", 1) in tags
        assert ("SELECT", 3) in tags and ("CREATE TABLE", None) in tags
        assert all(r["protocol"] == "simple" for r in rows)
        multi = [r for r in rows if r["statement"].startswith("INSERT")][0]
        assert sum(r["query_seq"] == multi["query_seq"] for r in rows) == 6  # one Query, 6 statements
    sessions = {r["backend_pid"]: r for r in stack.statements() if r["backend_pid"] in pids}
    assert {s["client_exe"] for s in sessions.values()} == {str(PG_BIN / "psql")}


def test_errors_are_captured_with_sqlstate(stack: Stack) -> None:
    out = stack.cluster.psql("SELECT pg_backend_pid()", via="unix").stdout  # noqa: F841
    p = subprocess.run([str(PG_BIN / "psql"), "-X", "-A", "-t", "-d", stack.cluster.dsn(via="unix"),
                        "-c", "SELECT pg_backend_pid()", "-c", "SELECT 1/0", "-c", "SELEC oops"],
                       capture_output=True, text=True)
    pid = backend_pid(p.stdout)
    got = stack.assert_matches_oracle({pid})[pid]
    errors = {r["statement"]: r["sqlstate"] for r in got if r["sqlstate"]}
    assert errors.get("SELECT 1/0") == "22012"


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_protocol_modes(stack: Stack, mode: str) -> None:
    stack.pgbench_init()
    before = set(server_statements(stack.cluster.log_file))
    stack.pgbench("-c", "2", "-t", "100", "-n", "-M", mode)
    logged = server_statements(stack.cluster.log_file)
    # the two clients' backends (pgbench's own setup connection runs no transaction)
    pids = {pid for pid, rows in logged.items() if pid not in before
            and any(r.sql.startswith("UPDATE pgbench_accounts") for r in rows)}
    assert len(pids) == 2
    got = stack.assert_matches_oracle(pids)
    for pid in pids:
        rows = got[pid]
        assert len(rows) == 700  # 100 transactions x 7 statements (tpcb-like)
        assert {r["protocol"] for r in rows} == {"simple" if mode == "simple" else "extended"}
        assert sum(r["command_tag"] == "UPDATE" and r["rows"] == 1 for r in rows) == 300
        if mode == "prepared":
            assert all(r["statement_name"].startswith("P") for r in rows if r["command_tag"] == "UPDATE")


def test_psycopg_bind_parameters_text_and_binary(stack: Stack) -> None:
    with psycopg.connect(stack.cluster.dsn(), application_name="e2e-psycopg", autocommit=True) as conn:
        pid = conn.info.backend_pid
        conn.execute("CREATE TABLE IF NOT EXISTS t_bind (id int primary key, v text)")
        conn.execute("INSERT INTO t_bind VALUES (%s, %s)", (1, "secret-value"))
        conn.execute("INSERT INTO t_bind VALUES (%b, %b)", (2, "other"))  # binary parameters
        for i in range(3, 10):
            conn.execute("INSERT INTO t_bind VALUES (%s, %s)", (i, "x"), prepare=True)
        row = conn.execute("SELECT v FROM t_bind WHERE id = %s", (1,), binary=True).fetchone()
        assert row == ("secret-value",)
        conn.execute("DROP TABLE t_bind")
    got = stack.assert_matches_oracle({pid})[pid]
    inserts = [r for r in got if r["statement"].startswith("INSERT")]
    assert len(inserts) == 9 and all(r["rows"] == 1 and r["protocol"] == "extended" for r in inserts)
    # psycopg sends the int in binary (int2 1 = hex 0001) and the str as text
    assert inserts[0]["param_formats"] == [1, 0]
    assert inserts[0]["param_values"] == ["0001", "secret-value"]
    assert inserts[1]["param_formats"] == [1, 1]
    assert inserts[1]["param_values"][1] == b"other".hex()
    assert any(r["statement_name"] for r in inserts[2:])  # psycopg prepared it server-side
    assert got[0]["application_name"] == "e2e-psycopg"
    assert got[0]["client_exe"] and os.path.basename(got[0]["client_exe"]).startswith("python")
    assert got[0]["client_pid"] == os.getpid()


def test_agent_reports_zero_drops(stack: Stack) -> None:
    stack.pgbench_init()
    stack.pgbench("-c", "4", "-T", "5", "-n", "-S")
    time.sleep(2)
    status = stack.agent.status()
    assert status["counters"]["statements"] > 1000
    assert {k: v for k, v in status["drops"].items() if v} == {}


def test_normalized_by_default(tmp_path: Path, stack: Stack) -> None:
    """Without --capture-raw no literal reaches the collector (PII-safe default)."""
    store = str(tmp_path / "normalized.db")
    collector = CollectorProcess(store, log_path=tmp_path / "c.log").start()
    agent = AgentProcess(collector.url, tmp_path / "agent", ports=(stack.cluster.port,),
                         log_path=tmp_path / "a.log").start()
    try:
        with psycopg.connect(stack.cluster.dsn(), autocommit=True) as conn:
            pid = conn.info.backend_pid
            conn.execute("SELECT 'jane@example.com' AS email, 4111111111111111 AS card")
            conn.execute("SELECT %s::text", ("bound-secret",))
        wait_for(lambda: len([r for r in captured(store) if r["backend_pid"] == pid]) >= 2,
                 timeout=20, interval=0.25)
    finally:
        agent.stop()
        collector.stop()
    rows = [r for r in captured(store) if r["backend_pid"] == pid]
    assert len(rows) == 2
    blob = repr(rows)
    for secret in ("jane@example.com", "4111111111111111", "bound-secret"):
        assert secret not in blob
    assert rows[0]["statement"] == "SELECT $1 AS email, $2 AS card"
    assert all(r["fingerprint"] and not r.get("param_values") for r in rows)

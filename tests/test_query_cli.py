"""`pgwarden sessions | session ID | statements` over a store filled through the real collector
(SQLite and PostgreSQL): every filter, the --json shape, --limit, the session timeline, empty
results, configuration fallbacks and errors; via CliRunner and via the installed executable."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.collector.times import now_us
from agent.pgcluster import free_port
from tests.test_collector_process import (
    BASE_US,
    PGWARDEN,
    CollectorProcess,
    batch,
    hermetic_env,
    new_pg_database,
    post,
    session_ended,
    session_started,
    statement,
)

S = 1_000_000
MIN = 60 * S
A, B, R, E = "a1b2c3d4e5f60001", "b0b0b0b0b0b00002", "c0ffee0000000003", "a1b2ffff00000004"
REQUIRED_JSON_FIELDS = (
    "session_id", "backend_pid", "user", "database", "application_name", "client_addr",
    "client_port", "client_pid", "client_exe", "protocol", "statement", "fingerprint",
    "command_tag", "rows", "sqlstate", "started_at", "duration_us")


def _dataset(now: int) -> list[list[dict[str, Any]]]:
    """Four sessions, as batches; `now` anchors the session used by relative --since tests."""
    alice = session_started(A, BASE_US, user="alice", database="shop",
                            application_name="checkout", backend_pid=5001,
                            client_addr="10.0.0.5", client_port=51000,
                            client={"pid": 4242, "uid": 1000, "user": "alice",
                                    "exe": "/usr/bin/python3.11", "cmdline": "python3 app.py",
                                    "comm": "python3", "systemd_unit": "checkout.service"})
    bob = session_started(B, BASE_US + 10 * MIN, user="bob", database="analytics",
                          application_name="psql", backend_pid=5002, transport="unix",
                          client_addr=None, client_port=None, identity_source="peercred",
                          client={"pid": 777, "uid": 1001, "user": "bob",
                                  "exe": "/usr/lib/postgresql/15/bin/psql"})
    carol = session_started(R, now - 3 * 60 * MIN, user="carol", database="shop",
                            client={"pid": 9, "exe": "/opt/app/bin/Worker"})
    bulk = session_started(E, BASE_US + 60 * MIN, user="bulk", database="shop")
    return [
        [alice,
         statement(A, 1, BASE_US + 1 * S, "SELECT * FROM public.orders WHERE id = $1",
                   fingerprint="f000000000000001", duration_us=1500),
         statement(A, 2, BASE_US + 2 * S, "UPDATE orders SET status = $1 WHERE id = $2",
                   command_tag="UPDATE", protocol="extended", statement_name="", portal=""),
         statement(A, 3, BASE_US + 3 * S, "INSERT INTO audit.log (what) VALUES ($1)",
                   command_tag=None, rows=None, sqlstate="42501",
                   error_message="permission denied for table log", error_severity="ERROR")],
        [statement(A, 4, BASE_US + 4 * S, "DELETE FROM customers", command_tag=None, rows=None,
                   sqlstate="PW001", error_message="blocked by pgwarden",
                   error_severity="ERROR", rule="no_delete_without_where", flags=["blocked"]),
         {"type": "capture.gap", "ts_us": BASE_US + 4 * S + 500_000, "session_id": A,
          "direction": "backend", "bytes": 4096, "reason": "dropped"},
         session_ended(A, BASE_US + 5 * S, statements=4),
         bob,
         statement(B, 1, BASE_US + 10 * MIN + 1 * S, "select count(*) from customers"),
         statement(B, 2, BASE_US + 11 * MIN, 'SELECT * FROM "Weird.Name"'),
         statement(B, 3, BASE_US + 12 * MIN, "INSERT INTO customers (email) VALUES ($1)",
                   command_tag=None, rows=None, sqlstate="23505",
                   error_message="duplicate key value violates unique constraint")],
        [carol,
         statement(R, 1, now - 2 * 60 * MIN, "SELECT 1 FROM orders_archive"),
         statement(R, 2, now - 5 * MIN, "SELECT $1"),
         bulk,
         *(statement(E, i, BASE_US + 60 * MIN + i * 1000) for i in range(1, 56))],
    ]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store holding the dataset, ingested by a real collector over HTTP."""
    workdir = tmp_path_factory.mktemp(f"query-{request.param}")
    location = (str(workdir / "collector.db") if request.param == "sqlite"
                else new_pg_database(request.getfixturevalue("pg_cluster")))
    collector = CollectorProcess(location, workdir / "collector").start()
    try:
        for seq, events in enumerate(_dataset(now_us()), start=1):
            response = post(collector.url, batch(events, seq=seq))
            assert response.status_code == 200, response.text
    finally:
        assert collector.stop() == 0
    return location


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return hermetic_env(tmp_path, COLUMNS="240")


def cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def json_rows(env: dict[str, str], store: str, command: str, *args: str) -> list[dict[str, Any]]:
    result = cli(env, command, "--store", store, "--json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def keys(rows: list[dict[str, Any]]) -> list[str]:
    """`A1`, `B3`...: the session letter and seq of each statement row."""
    letter = {A: "A", B: "B", R: "R", E: "E"}
    return [f"{letter[r['session_id']]}{r['seq']}" for r in rows]


# -- statements ----------------------------------------------------------------------------------

def test_json_has_the_documented_fields(store: str, env: dict[str, str]) -> None:
    rows = json_rows(env, store, "statements", "--session", A)
    assert keys(rows) == ["A1", "A2", "A3", "A4"]
    first = rows[0]
    assert list(first)[:len(REQUIRED_JSON_FIELDS)] == list(REQUIRED_JSON_FIELDS)
    assert {k: first[k] for k in REQUIRED_JSON_FIELDS} == {
        "session_id": A, "backend_pid": 5001, "user": "alice", "database": "shop",
        "application_name": "checkout", "client_addr": "10.0.0.5", "client_port": 51000,
        "client_pid": 4242, "client_exe": "/usr/bin/python3.11", "protocol": "simple",
        "statement": "SELECT * FROM public.orders WHERE id = $1",
        "fingerprint": "f000000000000001", "command_tag": "SELECT", "rows": 1, "sqlstate": None,
        "started_at": "2024-05-01T12:00:01.000000Z", "duration_us": 1500}
    assert first["tables"] == ["public.orders"] and first["flags"] == []
    assert first["client_systemd_unit"] == "checkout.service" and first["client_uid"] == 1000
    assert first["ts_us"] == BASE_US + S and first["seq"] == 1 and first["txn_status"] == "I"
    assert (first["capture_source"], first["protocol_version"], first["tls"]) == (
        "secure_rw", "3.0", False)
    blocked = rows[3]
    assert (blocked["sqlstate"], blocked["rule"], blocked["flags"]) == (
        "PW001", "no_delete_without_where", ["blocked"])
    assert rows[1]["protocol"] == "extended" and rows[1]["statement_name"] == ""
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", row["started_at"])


def test_all_statements_sorted_by_time(store: str, env: dict[str, str]) -> None:
    rows = json_rows(env, store, "statements")
    assert len(rows) == 4 + 3 + 2 + 55
    stamps = [r["ts_us"] for r in rows]
    assert stamps == sorted(stamps)


@pytest.mark.parametrize(("args", "expected"), [
    (["--user", "alice"], ["A1", "A2", "A3", "A4"]),
    (["--database", "analytics"], ["B1", "B2", "B3"]),
    (["--client-exe", "PYTHON"], ["A1", "A2", "A3", "A4"]),
    (["--client-exe", "bin/psql"], ["B1", "B2", "B3"]),
    (["--since", "2024-05-01T12:00:02Z", "--until", "2024-05-01T12:10:30Z"],
     ["A2", "A3", "A4", "B1"]),
    (["--since", "2024-05-01T14:10:00+02:00", "--until", "2024-05-01T12:11:00.000001Z"],
     ["B1", "B2"]),
    (["--since", "15m"], ["R2"]),
    (["--since", "3h", "--user", "carol"], ["R1", "R2"]),
    (["--until", "1d", "--user", "carol"], []),
    (["--table", "orders"], ["A1", "A2"]),
    (["--table", "Public.Orders"], ["A1", "A2"]),
    (["--table", "other.orders"], ["A2"]),
    (["--table", "audit.log"], ["A3"]),
    (["--table", "log"], ["A3"]),
    (["--table", "customers"], ["A4", "B1", "B3"]),
    (["--table", '"Weird.Name"'], ["B2"]),
    (["--table", "weird.name"], []),
    (["--error"], ["A3", "A4", "B3"]),
    (["--sqlstate", "42501"], ["A3"]),
    (["--error", "--sqlstate", "pw001"], ["A4"]),
    (["--sqlstate", "23"], ["B3"]),
    (["--sql-like", "%orders%"], ["A1", "A2", "R1"]),
    (["--sql-like", "SELECT COUNT(%"], ["B1"]),
    (["--sql-like", "%\\_archive"], ["R1"]),
    (["--sql-like", "delete from customers"], ["A4"]),
    (["--session", B], ["B1", "B2", "B3"]),
    (["--blocked"], ["A4"]),
    (["--user", "alice", "--error", "--table", "customers"], ["A4"]),
    (["--user", "nobody"], []),
])
def test_statement_filters(store: str, env: dict[str, str], args: list[str],
                           expected: list[str]) -> None:
    assert keys(json_rows(env, store, "statements", *args)) == expected


def test_limit_keeps_the_latest_rows_in_time_order(store: str, env: dict[str, str]) -> None:
    assert keys(json_rows(env, store, "statements", "--user", "alice", "--limit", "2")) == [
        "A3", "A4"]
    assert len(json_rows(env, store, "statements", "--user", "bulk", "--limit", "0")) == 55


def test_table_shows_latest_50_with_a_footer(store: str, env: dict[str, str]) -> None:
    result = cli(env, "statements", "--store", store, "--user", "bulk")
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if "bulk@shop" in line]
    assert len(lines) == 50
    assert "5 earlier statements match but are not shown (latest 50 shown)" in result.stdout
    everything = cli(env, "statements", "--store", store, "--user", "bulk", "--limit", "0")
    assert len([x for x in everything.stdout.splitlines() if "bulk@shop" in x]) == 55
    assert "earlier" not in everything.stdout


def test_table_is_readable(store: str, env: dict[str, str]) -> None:
    result = cli(env, "statements", "--store", store, "--user", "alice")
    assert result.exit_code == 0
    out = result.stdout
    for needle in ("time (UTC", "alice@shop", "python3.11[4242]", "DELETE FROM customers",
                   "PW001", "no_delete_without_where", "blocked", "42501", "UPDATE 1", "1.5 ms",
                   A[:8]):
        assert needle in out, needle


def test_nothing_matches_is_success(store: str, env: dict[str, str]) -> None:
    table = cli(env, "statements", "--store", store, "--user", "nobody")
    assert table.exit_code == 0 and "No matching statements." in table.stdout
    as_json = cli(env, "statements", "--store", store, "--user", "nobody", "--json")
    assert as_json.exit_code == 0 and as_json.stdout == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "yesterday"], "neither an ISO 8601 time"),
    (["--sqlstate", "123"], "a SQLSTATE has 5 characters"),
    (["--table", "a..b"], "empty name part"),
    (["--limit", "-1"], "-1 is not in the range"),
])
def test_usage_errors_exit_2(store: str, env: dict[str, str], args: list[str],
                             message: str) -> None:
    result = cli(env, "statements", "--store", store, *args)
    assert result.exit_code == 2 and message in result.stderr


# -- sessions and session ------------------------------------------------------------------------

def test_sessions(store: str, env: dict[str, str]) -> None:
    rows = json_rows(env, store, "sessions")
    assert [r["session_id"] for r in rows] == [A, B, E, R]
    alice = rows[0]
    assert (alice["user"], alice["client_exe"], alice["statements_stored"]) == (
        "alice", "/usr/bin/python3.11", 4)
    assert alice["started_at"] == "2024-05-01T12:00:00.000000Z"
    assert alice["ended_at"] == "2024-05-01T12:00:05.000000Z" and alice["duration_us"] == 5 * S
    assert rows[1]["ended_at"] is None and rows[1]["transport"] == "unix"
    assert [r["session_id"] for r in json_rows(env, store, "sessions", "--user", "bob")] == [B]
    assert [r["session_id"] for r in json_rows(env, store, "sessions", "--since", "1d")] == [R]
    assert [r["session_id"] for r in json_rows(env, store, "sessions", "--client-exe", "worker",
                                               "--limit", "1")] == [R]
    table = cli(env, "sessions", "--store", store)
    assert table.exit_code == 0
    for needle in (A, "alice@shop", "checkout", "10.0.0.5:51000", "terminate after 5 s", "open",
                   "unix socket", "psql[777]"):
        assert needle in table.stdout, needle


def test_session_timeline(store: str, env: dict[str, str]) -> None:
    rows = json_rows(env, store, "session", "a1b2c")
    assert [r["kind"] for r in rows] == ["session", "session.started", "statement", "statement",
                                         "statement", "statement", "gap", "session.ended"]
    assert rows[0]["session_id"] == A and rows[0]["client_systemd_unit"] == "checkout.service"
    assert [r["seq"] for r in rows if r["kind"] == "statement"] == [1, 2, 3, 4]
    assert rows[6]["bytes"] == 4096 and rows[7]["reason"] == "terminate"
    assert rows[2]["tables"] == ["public.orders"]
    assert all(re.fullmatch(r".*\.\d{6}Z", r["at"]) for r in rows[1:])
    table = cli(env, "session", A, "--store", store)
    assert table.exit_code == 0
    for needle in ("checkout.service", "python3.11[4242] python3 app.py", "alice (uid 1000)",
                   "session started", "SELECT * FROM public.orders WHERE id = $1",
                   "capture gap: 4096 backend bytes not seen (dropped)",
                   "session ended (terminate)", "tcp_connect"):
        assert needle in table.stdout, needle
    limited = json_rows(env, store, "session", A, "--limit", "2")
    assert [r["kind"] for r in limited] == ["session", "gap", "session.ended"]


def test_session_id_prefix_must_be_unambiguous(store: str, env: dict[str, str]) -> None:
    result = cli(env, "session", "a1b2", "--store", store)
    assert result.exit_code == 2
    assert "matches several sessions" in result.stderr and A in result.stderr and E in result.stderr


def test_unknown_session_is_not_an_error(store: str, env: dict[str, str]) -> None:
    result = cli(env, "session", "ffffffffffffffff", "--store", store, "--json")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no session 'ffffffffffffffff' in the store" in result.stderr


# -- where the store comes from ------------------------------------------------------------------

def test_store_from_the_configuration_file(store: str, tmp_path: Path) -> None:
    for section in ("query", "collector"):
        config = tmp_path / f"{section}.toml"
        config.write_text(f'[{section}]\nstore = "{store}"\n')
        env = hermetic_env(tmp_path, PGWARDEN_CONFIG=str(config))
        assert keys(json_rows_from(env, "statements", "--blocked")) == ["A4"]
    both = tmp_path / "both.toml"
    both.write_text(f'[query]\nstore = "{store}"\n[collector]\nstore = "/nonexistent/c.db"\n')
    env = hermetic_env(tmp_path, PGWARDEN_CONFIG=str(both))
    assert keys(json_rows_from(env, "statements", "--blocked")) == ["A4"]


def json_rows_from(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = cli(env, *args, "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_missing_store_exits_1_with_a_clear_message(tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "nowhere" / "collector.db"
    for command in (["statements"], ["sessions"], ["session", "abc"]):
        result = cli(env, *command, "--store", str(missing))
        assert result.exit_code == 1
        assert f"no pgwarden store at {missing}" in result.stderr
    assert not missing.parent.exists()


def test_unreachable_postgresql_store_exits_1(env: dict[str, str]) -> None:
    url = f"postgresql://pgwarden:hunter2@127.0.0.1:{free_port()}/pgwarden"
    result = cli(env, "statements", "--store", url)
    assert result.exit_code == 1
    assert "cannot open postgresql store postgresql://pgwarden:***@127.0.0.1" in result.stderr
    assert "hunter2" not in result.stderr


def test_invalid_configuration_file_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[query\nstore = 1\n")
    result = cli(hermetic_env(tmp_path, PGWARDEN_CONFIG=str(config)), "statements")
    assert result.exit_code == 2 and str(config) in result.stderr


# -- the installed executable --------------------------------------------------------------------

@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    def run_pgwarden(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PGWARDEN, *args], capture_output=True, text=True, timeout=120,
                              env=hermetic_env(tmp_path, COLUMNS="240", **env))
    yield run_pgwarden


def test_executable_json_and_tables(store: str, run: Any) -> None:
    done = run("statements", "--store", store, "--json", "--user", "alice", "--error")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["seq"], r["sqlstate"]) for r in rows] == [(3, "42501"), (4, "PW001")]

    paris = run("statements", "--store", store, "--session", A, TZ="Europe/Paris")
    assert paris.returncode == 0
    assert "time (UTC+02:00)" in paris.stdout and "2024-05-01T14:00:01.000" in paris.stdout

    timeline = run("session", A[:6], "--store", store)
    assert timeline.returncode == 0 and "session ended (terminate)" in timeline.stdout
    sessions = run("sessions", "--store", store, "--json", "--database", "analytics")
    assert [json.loads(x)["session_id"] for x in sessions.stdout.splitlines()] == [B]


def test_executable_exit_codes(tmp_path: Path, run: Any) -> None:
    missing = run("statements", "--store", str(tmp_path / "missing.db"))
    assert missing.returncode == 1 and "no pgwarden store at" in missing.stderr
    usage = run("statements", "--store", str(tmp_path / "missing.db"), "--since", "later")
    assert usage.returncode == 2
    for command in ("sessions", "session", "statements"):
        helped = run(command, "--help")
        assert helped.returncode == 0 and "--store" in helped.stdout and "--json" in helped.stdout
        assert "Exit status" in helped.stdout and "Example" in helped.stdout

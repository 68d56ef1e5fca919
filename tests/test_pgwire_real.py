"""pgwire decoder on real traffic: unchanged clients (psql, pgbench, psycopg 3) talk to a real
PostgreSQL 15 through a recording loopback relay (tests/pgwire_relay.py, a test harness only);
the recorded bytes are fed to `Connection`, and what it decoded is compared with what the server
itself logged (log_statement = 'all': "statement: SQL" per Query message, "execute <name>: SQL"
per Execute), with command tags and row counts checked against known results.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.pgcluster import PG_BIN, PgCluster
from agent.pgwire.records import SKIPPED, Authenticated, CancelInfo, Gap, SessionEnd, StartupInfo
from agent.pgwire.session import Connection, split_statements
from tests.pgwire_relay import Recording, Relay, replay, statements

pytestmark = pytest.mark.pg

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[(\d+)\] (?:\S*@\S* )?"
                      r"([A-Z]+):  (.*)$")
EXECUTE = re.compile(r"^execute (?:fetch from )?(\S+?)(?:/\S+)?: (.*)$", re.S)


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def relay(pg_cluster: PgCluster) -> Iterator[Relay]:
    with Relay(pg_cluster.port) as r:
        yield r


@pytest.fixture(scope="module")
def bench_db(pg_cluster: PgCluster) -> str:
    """A database with pgbench tables (scale 1), made directly (not through the relay)."""
    db = "pgwire_real"
    pg_cluster.psql(f"drop database if exists {db}")
    pg_cluster.psql(f"create database {db}")
    subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", "1", "-h",
                    str(pg_cluster.socket_dir), "-p", str(pg_cluster.port), "-U", "postgres",
                    db], check=True, capture_output=True, timeout=300)
    return db


def relay_dsn(relay: Relay, dbname: str = "postgres", **extra: str) -> str:
    parts = {"host": "127.0.0.1", "port": str(relay.port), "dbname": dbname,
             "user": "postgres", "sslmode": "disable", **extra}
    return " ".join(f"{k}={v}" for k, v in parts.items())


def run_psql(relay: Relay, *args: str, dbname: str = "postgres", stdin: str | None = None,
             check: bool = False, **extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(PG_BIN / "psql"), "-X", "-A", "-t", "-d", relay_dsn(relay, dbname, **extra), *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120,
                          check=check)


def decode(rec: Recording, **kw: Any) -> tuple[Connection, list[Any]]:
    conn = Connection(**kw)
    return conn, replay(rec.chunks, conn=conn)


def server_log(cluster: PgCluster, pid: int) -> list[tuple[str, str]]:
    """(severity, message) entries of backend `pid`, multi-line messages joined."""
    entries: list[list[Any]] = []
    current: list[Any] | None = None
    for line in cluster.log_file.read_text(errors="replace").splitlines():
        mm = LOG_LINE.match(line)
        if mm:
            current = [int(mm.group(1)), mm.group(2), mm.group(3)]
            entries.append(current)
        elif current is not None and line.startswith("\t"):
            current[2] += "\n" + line[1:]
    return [(sev, msg) for p, sev, msg in entries if p == pid]


def logged_statements(cluster: PgCluster, pid: int) -> list[tuple[str, str | None, str]]:
    """What the server says it ran: ("statement", None, SQL) or ("execute", name, SQL)."""
    out: list[tuple[str, str | None, str]] = []
    for sev, msg in server_log(cluster, pid):
        if sev != "LOG":
            continue
        if msg.startswith("statement: "):
            out.append(("statement", None, msg[len("statement: "):]))
        elif (mm := EXECUTE.match(msg)) is not None:
            out.append(("execute", mm.group(1), mm.group(2)))
    return out


def decoded_statements(records: list[Any]) -> list[tuple[str, str | None, Any]]:
    """Our Statements in the server log's shape: one "statement" per simple Query (its
    statements' texts), one "execute" per Execute that the server ran."""
    out: list[tuple[str, str | None, Any]] = []
    groups: dict[int, list[Any]] = {}
    for s in statements(records):
        if s.protocol == "simple":
            if s.query_seq not in groups:
                groups[s.query_seq] = []
                out.append(("statement", None, groups[s.query_seq]))
            groups[s.query_seq].append(s.text)
        elif s.protocol == "extended" and not s.flags & SKIPPED and \
                s.error_phase not in ("parse", "bind", "describe"):
            name = s.statement_name or "<unnamed>"
            out.append(("execute", name, s.text))
    return out


def assert_matches_server_log(cluster: PgCluster, conn: Connection, records: list[Any]) -> int:
    """Every statement the server logged for this backend, in order, is what we decoded."""
    assert conn.backend_pid is not None
    want = logged_statements(cluster, conn.backend_pid)
    for _ in range(50):  # the server writes its log asynchronously to us
        if len(want) >= len(decoded_statements(records)):
            break
        time.sleep(0.1)
        want = logged_statements(cluster, conn.backend_pid)
    got = decoded_statements(records)
    assert len(got) == len(want), (got, want)
    for (gk, gname, gtext), (wk, wname, wtext) in zip(got, want, strict=True):
        assert (gk, gname) == (wk, wname)
        if gk == "statement":
            expected = [wtext] if len(gtext) == 1 else list(split_statements(wtext))
            assert gtext == expected
        else:
            assert gtext == wtext
    return len(got)


def one_session(relay: Relay, count: int = 1) -> Recording:
    recs = relay.wait_closed(count)
    sessions = [r for r in recs if r.chunks and not _is_cancel(r)]
    assert len(sessions) == 1, [len(r.chunks) for r in recs]
    return sessions[0]


def _is_cancel(rec: Recording) -> bool:
    return any(isinstance(r, CancelInfo) for r in replay(rec.chunks))


# -- psql (simple protocol) -------------------------------------------------------------------


def test_psql_simple_queries_multi_statement_and_errors(pg_cluster: PgCluster,
                                                        relay: Relay) -> None:
    script = "\n".join([
        "drop table if exists relay_t;",
        "create table relay_t (id int primary key, v text);",
        "insert into relay_t select g, md5(g::text) from generate_series(1, 50) g;",
        "select 1 as one\\; select count(*) from relay_t\\; update relay_t set v = 'x' "
        "where id <= 3;",
        "select * from relay_nonexistent;",
        "insert into relay_t values (100, 'a')\\; select 1/0\\; insert into relay_t values "
        "(101, 'b');",
        "begin;",
        "delete from relay_t where id > 40;",
        "select id from relay_t order by id limit 7;",
        "commit;",
        "select ';' as semi, $$a;b$$ as dollar; -- trailing comment",
        ";",
    ])
    p = run_psql(relay, "-v", "ON_ERROR_STOP=0", stdin=script, application_name="relay_psql")
    assert "division by zero" in p.stderr
    conn, recs = decode(one_session(relay))
    info = [r for r in recs if isinstance(r, StartupInfo)][0]
    assert info.params["application_name"] == "relay_psql" and info.params["user"] == "postgres"
    assert any(isinstance(r, Authenticated) for r in recs)
    assert isinstance(recs[-1], SessionEnd) and recs[-1].reason == "terminate"
    st = statements(recs)
    by_text = {s.text: s for s in st}
    assert (by_text["create table relay_t (id int primary key, v text);"].command_tag,
            by_text["create table relay_t (id int primary key, v text);"].rows) == \
        ("CREATE TABLE", None)
    ins = by_text["insert into relay_t select g, md5(g::text) from generate_series(1, 50) g;"]
    assert (ins.command_tag, ins.rows) == ("INSERT", 50)
    assert [(by_text[t].command_tag, by_text[t].rows, by_text[t].rows_sent) for t in
            ("select 1 as one", "select count(*) from relay_t",
             "update relay_t set v = 'x' where id <= 3")] == [
        ("SELECT", 1, 1), ("SELECT", 1, 1), ("UPDATE", 3, 0)]
    missing = by_text["select * from relay_nonexistent;"]
    assert (missing.sqlstate, missing.error_severity) == ("42P01", "ERROR")
    assert [(by_text[t].command_tag, by_text[t].sqlstate, by_text[t].flags) for t in
            ("insert into relay_t values (100, 'a')", "select 1/0",
             "insert into relay_t values (101, 'b')")] == [
        ("INSERT", None, 0), (None, "22012", 0), (None, None, SKIPPED)]
    assert (by_text["delete from relay_t where id > 40;"].rows,
            by_text["delete from relay_t where id > 40;"].txn_status) == (10, "T")
    sel = by_text["select id from relay_t order by id limit 7;"]
    assert (sel.rows, sel.rows_sent, sel.txn_status) == (7, 7, "T")
    assert by_text["commit;"].txn_status == "I"
    assert [s.seq for s in st] == list(range(1, len(st) + 1))
    assert all(s.ts_end_ns >= s.ts_start_ns for s in st if s.ts_end_ns)
    assert assert_matches_server_log(pg_cluster, conn, recs) == 12


def test_psql_copy_in_and_out(pg_cluster: PgCluster, relay: Relay) -> None:
    rows = "".join(f"{i}\tsecret-{i}\n" for i in range(1, 1001))
    script = ("drop table if exists relay_copy;\n"
              "create table relay_copy (id int, v text);\n"
              f"copy relay_copy from stdin;\n{rows}\\.\n"
              "copy relay_copy to stdout;\n"
              "copy (select * from relay_copy where id <= 10) to stdout with (format csv);\n")
    p = run_psql(relay, "-v", "ON_ERROR_STOP=1", stdin=script, check=True)
    assert p.stdout.count("secret-") == 1010
    conn, recs = decode(one_session(relay))
    st = statements(recs)
    assert [(s.command_tag, s.rows) for s in st[2:]] == [("COPY", 1000), ("COPY", 1000),
                                                         ("COPY", 10)]
    assert "secret-" not in repr(recs)  # COPY data is never kept
    assert_matches_server_log(pg_cluster, conn, recs)


def test_psql_failed_login_wrong_database(pg_cluster: PgCluster, relay: Relay) -> None:
    p = run_psql(relay, "-c", "select 1", dbname="pgwire_no_such_db")
    assert p.returncode != 0
    _, recs = decode(one_session(relay))
    # trust: AuthenticationOk comes first, the database is looked up after it
    assert [type(r).__name__ for r in recs] == ["StartupInfo", "Authenticated", "SessionEnd"]
    assert (recs[-1].reason, recs[-1].sqlstate) == ("error", "3D000")
    assert "pgwire_no_such_db" in recs[-1].message


def test_ssl_through_syscall_view_is_reported_encrypted(pg_cluster: PgCluster,
                                                        relay: Relay) -> None:
    p = run_psql(relay, "-c", "select 'hidden'", sslmode="require")
    assert p.returncode == 0 and "hidden" in p.stdout
    rec = one_session(relay)
    # The relay sees what recvfrom/sendto would: the 'S' answer, then ciphertext.
    _, recs = decode(rec, tls_visible=False)
    assert [(type(r).__name__, getattr(r, "reason", None)) for r in recs] == [
        ("Gap", "encrypted"), ("SessionEnd", "disconnect")]
    assert b"hidden" not in rec.stream(1)


# -- pgbench ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_select_only(pg_cluster: PgCluster, relay: Relay, bench_db: str,
                             mode: str) -> None:
    _pgbench(relay, bench_db, "-M", mode, "-S", "-t", "300")
    for rec in relay.wait_closed():
        conn, recs = decode(rec)
        st = statements(recs)
        if len(st) < 300:
            continue  # pgbench's own setup connection
        assert len(st) == 300
        assert {(s.command_tag, s.rows, s.rows_sent, s.txn_status, s.flags) for s in st} == \
            {("SELECT", 1, 1, "I", 0)}
        if mode == "simple":
            assert all(re.fullmatch(r"SELECT abalance FROM pgbench_accounts WHERE aid = \d+;",
                                    s.text) for s in st)
        else:
            assert {s.text for s in st} == \
                {"SELECT abalance FROM pgbench_accounts WHERE aid = $1;"}
            assert {s.param_count for s in st} == {1}
            names = {s.statement_name for s in st}
            if mode == "extended":
                assert names == {""}
            else:  # pgbench 15 names it P_0 (later versions P0_1)
                assert len(names) == 1 and re.fullmatch(r"P_?\d+(_\d+)?", names.pop())
        assert assert_matches_server_log(pg_cluster, conn, recs) == 300
        break
    else:
        pytest.fail("no pgbench session recorded")


@pytest.mark.parametrize("mode", ["simple", "prepared"])
def test_pgbench_tpcb_like(pg_cluster: PgCluster, relay: Relay, bench_db: str,
                           mode: str) -> None:
    _pgbench(relay, bench_db, "-M", mode, "-t", "50")
    checked = 0
    for rec in relay.wait_closed():
        conn, recs = decode(rec, capture_params=True)
        st = statements(recs)
        if len(st) < 350:
            continue
        assert len(st) == 350  # BEGIN, 3 UPDATE, SELECT, INSERT, END per transaction
        tags = [(s.command_tag, s.rows) for s in st[:7]]
        assert tags == [("BEGIN", None), ("UPDATE", 1), ("SELECT", 1), ("UPDATE", 1),
                        ("UPDATE", 1), ("INSERT", 1), ("COMMIT", None)]
        assert [s.txn_status for s in st[:7]] == ["T"] * 6 + ["I"]
        if mode == "prepared":
            assert all(s.param_values is not None and len(s.param_values) == s.param_count
                       for s in st)
        checked += assert_matches_server_log(pg_cluster, conn, recs)
    assert checked == 350


def _pgbench(relay: Relay, db: str, *args: str) -> None:
    env = {**os.environ, "PGSSLMODE": "disable"}
    subprocess.run([str(PG_BIN / "pgbench"), "-n", "-c", "1", "-h", "127.0.0.1", "-p",
                    str(relay.port), "-U", "postgres", *args, db], check=True,
                   capture_output=True, timeout=300, env=env)


# -- psycopg 3 (extended protocol, binary, prepared, pipeline, cancel) ------------------------


def test_psycopg_params_binary_prepared(pg_cluster: PgCluster, relay: Relay) -> None:
    with psycopg.connect(relay_dsn(relay), autocommit=True) as c:
        c.execute("drop table if exists relay_pg; create table relay_pg (id int, v text)")
        c.execute("insert into relay_pg values (%s, %s)", (1, "text-secret"))
        c.execute("insert into relay_pg values (%b, %b)", (2, "binary-secret"))
        cur = c.cursor(binary=True)
        cur.execute("select id, v from relay_pg where id >= %s order by id", (1,))
        assert cur.fetchall() == [(1, "text-secret"), (2, "binary-secret")]
        for i in range(3):
            c.execute("select v from relay_pg where id = %s", (i,), prepare=True)
        c.execute("update relay_pg set v = %s where id = %s", (None, 1))
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("select 1 / %s", (0,))
    rec = one_session(relay)
    conn, recs = decode(rec, capture_params=True)
    st = statements(recs)
    assert st[0].protocol == "simple" and len([s for s in st if s.query_seq == 1]) == 2
    ext = [s for s in st if s.protocol == "extended"]
    texts = [s.text for s in ext]
    assert texts[:3] == ["insert into relay_pg values ($1, $2)"] * 2 + \
        ["select id, v from relay_pg where id >= $1 order by id"]
    # psycopg sends numbers in binary even for %s (int2 here), strings as text.
    assert ext[0].param_formats == (1, 0) and ext[0].param_values == ("0001", "text-secret")
    assert ext[1].param_formats == (1, 1)
    assert ext[1].param_values == ("0002", b"binary-secret".hex())
    assert (ext[2].command_tag, ext[2].rows, ext[2].rows_sent) == ("SELECT", 2, 2)
    prepared = [s for s in ext if s.text == "select v from relay_pg where id = $1"]
    assert len(prepared) == 3 and prepared[0].statement_name.startswith("_pg3_")
    assert len({s.statement_name for s in prepared}) == 1
    upd = [s for s in ext if s.text and s.text.startswith("update")][0]
    assert (upd.rows, upd.param_values[0]) == (1, None)
    # 1 / 0 with a known parameter is folded by the planner at Bind: refused, never run.
    assert (ext[-1].sqlstate, ext[-1].text, ext[-1].error_phase) == \
        ("22012", "select 1 / $1", "bind")
    # Without capture_params no value is kept anywhere.
    _, plain = decode(rec)
    assert "secret" not in repr([s.param_values for s in statements(plain)])
    assert_matches_server_log(pg_cluster, conn, recs)


def test_psycopg_pipeline_and_error_in_pipeline(pg_cluster: PgCluster, relay: Relay) -> None:
    with psycopg.connect(relay_dsn(relay), autocommit=True) as c:
        c.execute("drop table if exists relay_pipe; create table relay_pipe (id int primary key)")
        with c.pipeline():
            for i in range(20):
                c.execute("insert into relay_pipe values (%s)", (i,))
        with c.cursor() as cur:
            cur.executemany("insert into relay_pipe values (%s)", [(i,) for i in range(20, 40)])
        with pytest.raises(psycopg.errors.UniqueViolation):
            with c.pipeline():
                c.execute("insert into relay_pipe values (%s)", (100,))
                c.execute("insert into relay_pipe values (%s)", (0,))  # duplicate
                c.execute("insert into relay_pipe values (%s)", (101,))
        # One implicit transaction per pipeline sync: the failure rolled back insert 100 too.
        assert c.execute("select count(*) from relay_pipe").fetchone() == (40,)
    conn, recs = decode(one_session(relay))
    st = [s for s in statements(recs) if s.protocol == "extended"]
    inserts = [s for s in st if s.text == "insert into relay_pipe values ($1)"]
    assert len(inserts) == 43
    assert sum(1 for s in inserts if (s.command_tag, s.rows) == ("INSERT", 1)) == 41
    failed = [s for s in inserts if s.sqlstate]
    assert len(failed) == 1 and failed[0].sqlstate == "23505"
    assert failed[0].error_constraint == "relay_pipe_pkey"
    skipped = [s for s in inserts if s.flags & SKIPPED]
    assert len(skipped) == 1
    assert_matches_server_log(pg_cluster, conn, recs)


def test_psycopg_copy(pg_cluster: PgCluster, relay: Relay) -> None:
    with psycopg.connect(relay_dsn(relay), autocommit=True) as c:
        c.execute("drop table if exists relay_pcopy; create table relay_pcopy (id int, v text)")
        with c.cursor().copy("copy relay_pcopy from stdin") as cp:
            for i in range(500):
                cp.write_row((i, f"row-{i}"))
        with c.cursor().copy("copy relay_pcopy to stdout") as cp:
            assert sum(1 for _ in cp) == 500
    conn, recs = decode(one_session(relay))
    copies = [(s.command_tag, s.rows) for s in statements(recs) if s.command_tag == "COPY"]
    assert copies == [("COPY", 500), ("COPY", 500)]
    assert_matches_server_log(pg_cluster, conn, recs)


def test_psycopg_cancel(pg_cluster: PgCluster, relay: Relay) -> None:
    with psycopg.connect(relay_dsn(relay), autocommit=True) as c:
        pid = c.info.backend_pid
        timer = threading.Timer(0.5, c.cancel_safe)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("select pg_sleep(20)")
        timer.join()
        c.execute("select 1")
    recs_by_conn = [decode(r) for r in relay.wait_closed(2)]
    cancels = [r for _, recs in recs_by_conn for r in recs if isinstance(r, CancelInfo)]
    assert [c.target_pid for c in cancels] == [pid]
    conn, recs = [(c, r) for c, r in recs_by_conn if c.backend_pid == pid][0]
    st = statements(recs)
    assert [(s.text, s.sqlstate) for s in st] == [("select pg_sleep(20)", "57014"),
                                                  ("select 1", None)]
    assert_matches_server_log(pg_cluster, conn, recs)


def test_decoding_is_chunking_independent_on_real_traffic(pg_cluster: PgCluster,
                                                          relay: Relay) -> None:
    with psycopg.connect(relay_dsn(relay), autocommit=True) as c:
        c.execute("select repeat('x', 100000), g from generate_series(1, 50) g").fetchall()
        c.execute("select %s::text", ("é" * 5000,))
    rec = one_session(relay)
    from tests.pgwire_relay import bytewise, comparable, rechunk

    base = comparable(replay(rec.chunks))
    assert [s.rows for s in statements(base)] == [50, 1]
    for cut in (1, 5, 4096, 8192):
        assert comparable(replay(rechunk(rec.chunks, cut))) == base
    assert comparable(replay(bytewise(rec.chunks[:6]))) == comparable(replay(rec.chunks[:6]))


# -- password authentication: secrets never recorded ------------------------------------------


@pytest.fixture(scope="module")
def auth_cluster() -> Iterator[PgCluster]:
    base = Path(tempfile.mkdtemp(prefix="pgwarden-pgwire-auth-"))
    cluster = PgCluster(base, settings={"log_statement": "'all'",
                                        "password_encryption": "'scram-sha-256'"})
    cluster.init()
    (cluster.data_dir / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all clear_user 127.0.0.1/32 password\n"
        "host all all 127.0.0.1/32 scram-sha-256\n")
    cluster.start()
    cluster.psql("create role scram_user login password 'Scram-S3cret-Pass'")
    cluster.psql("create role clear_user login password 'Clear-S3cret-Pass'")
    yield cluster
    cluster.destroy()


@pytest.mark.parametrize(("user", "secret"), [("scram_user", "Scram-S3cret-Pass"),
                                              ("clear_user", "Clear-S3cret-Pass")])
def test_password_and_sasl_bodies_never_recorded(auth_cluster: PgCluster, user: str,
                                                 secret: str) -> None:
    with Relay(auth_cluster.port) as relay:
        with psycopg.connect(relay_dsn(relay, user=user, password=secret),
                             autocommit=True) as c:
            assert c.execute("select current_user").fetchone() == (user,)
        rec = relay.wait_closed(1)[0]
    assert secret.encode() in rec.stream(0) or user == "scram_user"  # cleartext on the wire
    conn = Connection(capture_params=True)
    recs = replay(rec.chunks, conn=conn)
    assert any(isinstance(r, Authenticated) for r in recs)
    assert [s.text for s in statements(recs)] == ["select current_user"]
    state = repr(recs) + repr({k: getattr(conn, k, None) for k in Connection.__slots__})
    assert secret not in state and "S3cret" not in state
    assert not [r for r in recs if isinstance(r, Gap)]


def test_wrong_password_is_a_fatal_session_end(auth_cluster: PgCluster) -> None:
    with Relay(auth_cluster.port) as relay:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(relay_dsn(relay, user="scram_user", password="wrong-Guess-123"))
        rec = relay.wait_closed(1)[0]
    recs = replay(rec.chunks)
    end = recs[-1]
    assert isinstance(end, SessionEnd) and (end.reason, end.sqlstate) == ("error", "28P01")
    assert "wrong-Guess" not in repr(recs)


# -- attach mid-session, lost chunks: on real recordings --------------------------------------


def _frontend_executes(chunks: list[tuple[int, bytes]]) -> int:
    """Execute messages in a frontend stream that starts at a message boundary."""
    from agent.pgwire.decoder import StreamDecoder
    from agent.pgwire.messages import Execute

    dec = StreamDecoder(frontend=True, startup=False)
    return sum(isinstance(x, Execute) for d, c in chunks if d == 0 for x in dec.feed(c))


@pytest.mark.parametrize("mode", ["prepared", "simple"])
def test_attach_mid_session_to_real_pgbench(pg_cluster: PgCluster, relay: Relay, bench_db: str,
                                            mode: str) -> None:
    _pgbench(relay, bench_db, "-M", mode, "-S", "-t", "200")
    rec = max(relay.wait_closed(), key=lambda r: len(r.chunks))
    fe_idx = [i for i, (d, _) in enumerate(rec.chunks) if d == 0]
    attach = fe_idx[len(fe_idx) // 3]  # the agent starts here: offsets restart at 0
    rest = rec.chunks[attach:]
    conn = Connection(mid_session=True)
    recs = replay(rest, conn=conn)
    assert isinstance(recs[0], Gap) and recs[0].reason == "mid_session"
    st = statements(recs)
    expected = _frontend_executes(rest) if mode == "prepared" else \
        sum(1 for d, c in rest if d == 0 and c[:1] == b"Q")
    assert len(st) == expected > 100
    assert {(s.command_tag, s.rows, s.rows_sent, s.txn_status) for s in st} == \
        {("SELECT", 1, 1, "I")}
    if mode == "prepared":  # its Parse happened before the attach: reported, never dropped
        assert {(s.text, s.flags) for s in st} == {(None, 1)}
        assert len({s.statement_name for s in st}) == 1 and {s.param_count for s in st} == {1}
    else:
        assert all(s.flags == 0 and s.text.startswith("SELECT abalance") for s in st)
    assert conn.decode_errors == 0 and conn.backend_pid is None  # BackendKeyData was before


def test_losing_any_one_chunk_of_a_real_session(pg_cluster: PgCluster, relay: Relay) -> None:
    with psycopg.connect(relay_dsn(relay), autocommit=True) as c:
        c.execute("drop table if exists relay_loss; create table relay_loss (id int, v text)")
        for i in range(4):
            c.execute("insert into relay_loss select g, repeat('v', 300) "
                      "from generate_series(1, %s) g", (200 * (i + 1),))
            c.execute("select * from relay_loss where id <= %s", (100 * i,)).fetchall()
            c.execute(f"update relay_loss set v = 'u{i}' where id = {i}")
        for i in range(3):
            c.execute("select %s::int * 2", (i,))
    rec = one_session(relay)
    full = statements(replay(rec.chunks))
    assert len(full) == 2 + 4 * 3 + 3

    def key(s: Any) -> tuple[Any, ...]:
        return (s.text, s.command_tag, s.rows, s.sqlstate, s.flags)

    first_query = next(i for i, (d, c) in enumerate(rec.chunks) if d == 0 and c[:1] == b"Q")
    for lost in range(first_query, len(rec.chunks) - 1):
        pos = [0, 0]
        conn = Connection()
        for ts, (d, chunk) in enumerate(rec.chunks):
            if ts != lost:
                conn.feed(d, pos[d], chunk, ts)
            pos[d] += len(chunk)
        conn.close(10**6)
        recs = conn.take_records()
        got = statements(recs)
        assert conn.decode_errors == 0
        gaps = [(g.reason, g.bytes) for g in recs if isinstance(g, Gap)]
        if any(d == rec.chunks[lost][0] for d, _ in rec.chunks[lost + 1:]):
            assert gaps[0] == ("dropped", len(rec.chunks[lost][1]))
        else:  # nothing follows in that direction: a loss at the very end is not visible
            assert not gaps
        # Everything answered before the loss is intact, and so is everything requested from
        # the round trip after the one that lost a chunk (ts = chunk index + 1 in replay).
        before = sum(1 for s in full if s.ts_end_ns is not None and s.ts_end_ns < lost)
        assert [key(s) for s in got[:before]] == [key(s) for s in full[:before]]
        after = [s for s in full if s.ts_start_ns - 1 > lost + 1]
        assert after or lost >= len(rec.chunks) - 4
        assert [key(s) for s in got[len(got) - len(after):]] == [key(s) for s in after], lost


# -- fast-path FunctionCall (libpq large objects), notifications, protocol negotiation --------


def test_psql_large_object_uses_function_calls(pg_cluster: PgCluster, relay: Relay,
                                               tmp_path: Path) -> None:
    payload = tmp_path / "lo.bin"
    payload.write_bytes(b"large object payload " * 500)
    payload.chmod(0o644)
    p = run_psql(relay, "-v", "ON_ERROR_STOP=1", check=True, stdin="\n".join([
        f"\\lo_import {payload}",
        "select count(*) from pg_largeobject_metadata;",
        "listen relay_chan;",
        "notify relay_chan, 'hello';",
        "select 1;",
    ]))
    assert "lo_import" in p.stdout
    conn, recs = decode(one_session(relay))
    st = statements(recs)
    calls = [s for s in st if s.protocol == "function_call"]
    assert calls and all(s.function_oid and s.sqlstate is None and s.ts_end_ns for s in calls)
    assert "object payload" not in repr(recs)  # FunctionCall arguments are never kept
    assert conn.backend_pid is not None
    logged = [m for sev, m in server_log(pg_cluster, conn.backend_pid)
              if sev == "LOG" and m.startswith("fastpath function call")]
    assert len(logged) == len(calls)
    assert_matches_server_log(pg_cluster, conn, recs)


def test_protocol_version_negotiation(pg_cluster: PgCluster, relay: Relay) -> None:
    if psycopg.pq.version() < 180000:
        pytest.skip("libpq < 18 cannot ask for protocol 3.2")
    with psycopg.connect(relay_dsn(relay, max_protocol_version="3.2"), autocommit=True) as c:
        assert c.execute("select 42").fetchone() == (42,)
    conn, recs = decode(one_session(relay))
    info = [r for r in recs if isinstance(r, StartupInfo)][0]
    assert info.protocol_version == "3.2"
    assert conn.negotiated_version == 196608  # PostgreSQL 15 speaks 3.0
    assert [s.text for s in statements(recs)] == ["select 42"]

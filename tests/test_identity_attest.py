"""Identity attestation: pgwarden.attest() and session_identity() on real backends, and the
agent-side Attestor (agent/attest.py) driving them.

SQL side: only role pgwarden_agent may attest; a registration attaches only to a live client
backend of this database whose start matches (within 2 s); a stale row never applies to a pid
reused by a later backend; rows of exited backends are removed; nothing a session can set
(application_name, custom settings, direct writes) changes its identity; guard principals
match the attested identity.

Agent side: service rules (exe glob, cmdline regex, unit, container, user, uid; first match
wins) from the configuration file; submit() never blocks nor raises and counts what it drops
(queue full, database down or missing, pgwarden not installed); a broken connection is
reopened; on_result gets the masking decision.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.attest import Attestor, AttestResult, ServiceRule, attest_dsn, load_services
from agent.config import ConfigError
from agent.config import load as load_config
from agent.db.testing import GuardedCluster
from agent.masking.testing import MaskedCluster, backend_start
from agent.pgcluster import wait_for
from agent.policy import client
from agent.policy.schema import load

pytestmark = pytest.mark.pg


@pytest.fixture(scope="module")
def mc() -> Iterator[MaskedCluster]:
    m = MaskedCluster(rows=10).start()
    yield m
    m.destroy()


@pytest.fixture(scope="module")
def db(mc: MaskedCluster) -> str:
    return mc.new_db()


def identity_of(conn: psycopg.Connection) -> str | None:
    return conn.execute("SELECT pgwarden.session_identity()").fetchone()[0]  # type: ignore[index]


def attest_raw(mc: MaskedCluster, db: str, pid: int, start: dt.datetime,
               identity: dict) -> dict:  # type: ignore[type-arg]
    with psycopg.connect(mc.dsn(db, "pgwarden_agent"), autocommit=True) as agent:
        return agent.execute("SELECT pgwarden.attest(%s, %s, %s::jsonb)",  # type: ignore[index]
                             [pid, start, json.dumps(identity)]).fetchone()[0]


# -- the SQL side --------------------------------------------------------------------------------

def test_attest_then_session_identity(mc: MaskedCluster, db: str) -> None:
    with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn:
        assert identity_of(conn) is None
        out = mc.attest(db, conn, {"service": "billing", "pid": 4242, "uid": 1000,
                                   "user": "svc", "exe": "/usr/bin/python3",
                                   "cmdline": "python3 -m billing", "systemd_unit":
                                   "billing.service", "container_id": None})
        assert out == {"attested": True, "identity": "billing", "session_user": "app",
                       "masked": False, "masked_columns": []}
        assert identity_of(conn) == "billing"
        row = mc.sql(db, "SELECT identity, client->>'cmdline', masked FROM pgwarden.attested"
                         " WHERE pid = %s", [conn.info.backend_pid])
        assert row == [("billing", "python3 -m billing", False)]


@pytest.mark.parametrize("client, expected", [
    ({"systemd_unit": "cron.service", "exe": "/usr/bin/psql"}, "unit:cron.service"),
    ({"container_id": "ab" * 32, "exe": "/usr/bin/psql"}, "container:" + "ab" * 32),
    ({"exe": "/usr/bin/psql", "pid": 1}, "exe:/usr/bin/psql"),
    ({}, None),
])
def test_identity_without_a_service_name(mc: MaskedCluster, db: str, client: dict,  # type: ignore[type-arg]
                                         expected: str | None) -> None:
    with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn:
        out = mc.attest(db, conn, client)
        assert out["attested"] is True and out["identity"] == expected
        assert identity_of(conn) == expected
        # app is shared and the policy masks ai-agent: other programs see real values, a
        # session the agent could not attribute is unattested, hence masked
        assert out["masked"] is (expected is None)


def test_start_time_must_match_and_pid_must_be_a_live_client_backend(mc: MaskedCluster,
                                                                    db: str) -> None:
    with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn:
        pid, start = conn.info.backend_pid, backend_start(conn)
        late = attest_raw(mc, db, pid, start - dt.timedelta(seconds=30), {"service": "billing"})
        assert late == {"attested": False,
                        "reason": "the backend with this pid started at another time"}
        assert identity_of(conn) is None
        near = attest_raw(mc, db, pid, start + dt.timedelta(seconds=1.5), {"service": "billing"})
        assert near["attested"] is True and identity_of(conn) == "billing"
    gone = attest_raw(mc, db, pid, start, {"service": "billing"})
    assert gone == {"attested": False, "reason": "no live client backend has this pid"}
    bgwriter = mc.sql(db, "SELECT pid, backend_start FROM pg_stat_activity"
                          " WHERE backend_type = 'background writer'")[0]
    assert attest_raw(mc, db, *bgwriter, {})["attested"] is False
    with psycopg.connect(mc.dsn("postgres", "app"), autocommit=True) as other:
        out = attest_raw(mc, db, other.info.backend_pid, backend_start(other), {})
        assert out == {"attested": False,
                       "reason": "the backend is connected to another database"}


def test_stale_row_never_applies_to_a_reused_pid(mc: MaskedCluster, db: str) -> None:
    with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn:
        pid = conn.info.backend_pid
        # what a row left by an earlier backend with this pid looks like (agent missed the exit)
        mc.sql(db, "INSERT INTO pgwarden.attested (pid, backend_start, identity, masked)"
                   " VALUES (%s, %s, 'billing', false)",
               [pid, backend_start(conn) - dt.timedelta(hours=1)])
        assert identity_of(conn) is None
        card = conn.execute("SELECT card_number FROM customers WHERE id = 1").fetchone()
        assert card == ("[redacted]",)
    # and it is cleaned up by the next registration of anyone
    with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn2:
        mc.attest(db, conn2, {"service": "x"})
    assert mc.sql(db, "SELECT count(*) FROM pgwarden.attested WHERE pid = %s", [pid]) == [(0,)]


def test_exited_backends_rows_are_removed(mc: MaskedCluster, db: str) -> None:
    pids = []
    for _ in range(3):
        with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn:
            mc.attest(db, conn, {"service": "billing"})
            pids.append(conn.info.backend_pid)
    wait_for(lambda: not mc.sql(db, "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)",
                                [pids]), timeout=10)
    with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn:
        mc.attest(db, conn, {"service": "billing"})
        live = conn.info.backend_pid
    assert mc.sql(db, "SELECT pid FROM pgwarden.attested WHERE pid = ANY(%s)",
                  [pids + [live]]) == [(live,)]


def test_identity_cannot_be_forged_from_the_session(mc: MaskedCluster, db: str) -> None:
    with psycopg.connect(mc.dsn(db, "app", application_name="billing"),
                         autocommit=True) as conn:
        conn.execute("SET pgwarden.identity = 'billing'")
        conn.execute("SELECT set_config('pgwarden.session_identity', 'billing', false)")
        assert identity_of(conn) is None
        assert conn.execute("SELECT email FROM customers WHERE id = 1").fetchone()[0] != \
            mc.customers[0]["email"]
        for sql in ("INSERT INTO pgwarden.attested VALUES (pg_backend_pid(), now(), 'billing',"
                    " '{}', false)",
                    "UPDATE pgwarden.identity_rules SET unmask_identities = '{.*}'",
                    "SELECT pgwarden.attest(pg_backend_pid(), now(), '{\"service\":\"billing\"}')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        assert identity_of(conn) is None


def test_agent_role_may_only_attest(mc: MaskedCluster, db: str) -> None:
    with psycopg.connect(mc.dsn(db, "pgwarden_agent"), autocommit=True) as agent:
        for sql in ("SELECT * FROM pgwarden.attested", "SELECT * FROM app.customers",
                    "SELECT * FROM customers", "INSERT INTO pgwarden.attested VALUES"
                    " (1, now(), 'x', '{}', false)", "SELECT * FROM pgwarden.identities()",
                    "SELECT pgwarden.apply_policy('{}', '', '')", "CREATE TABLE public.t (i int)"):
            with pytest.raises(psycopg.Error) as e:
                agent.execute(sql)
            assert e.value.sqlstate in ("42501", "42P01"), (sql, e.value)
    assert mc.sql(db, "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolinherit,"
                      " (SELECT count(*) FROM pg_auth_members WHERE member = r.oid)"
                      " FROM pg_roles r WHERE rolname = 'pgwarden_agent'") == [
        (False, False, False, False, False, 0)]


def test_identities_lists_backends(mc: MaskedCluster, db: str) -> None:
    with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as billing, \
            psycopg.connect(mc.dsn(db, "app"), autocommit=True) as agent_prog, \
            psycopg.connect(mc.dsn(db, "ai_reader"), autocommit=True) as ai:
        mc.attest(db, billing, {"service": "billing", "exe": "/usr/bin/python3"})
        mc.attest(db, agent_prog, {"service": "ai-agent"})
        rows = {r[0]: r for r in mc.sql(
            db, "SELECT pid, usename, identity, attested, masked, mask_mode"
                " FROM pgwarden.identities()")}
        assert rows[billing.info.backend_pid][1:] == ("app", "billing", True, False, "identity")
        assert rows[agent_prog.info.backend_pid][1:] == ("app", "ai-agent", True, True,
                                                         "identity")
        assert rows[ai.info.backend_pid][1:] == ("ai_reader", None, False, True, "role")


GUARD_POLICY = """\
version: 1
protect:
  - name: core
    tables: [app.customers, app.orders]
principals:
  - name: ci
    match: {identities: [ci-runner]}
    rules: {no_truncate: allow}
"""


def test_guard_principals_match_the_attested_identity() -> None:
    gc = GuardedCluster(policy=GUARD_POLICY).start()
    try:
        db = gc.new_db()
        with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as e:
                conn.execute("TRUNCATE app.orders")
            assert e.value.sqlstate == "PW001"
            with psycopg.connect(gc.dsn(db, "pgwarden_agent"), autocommit=True) as agent:
                start = backend_start(conn)
                agent.execute("SELECT pgwarden.attest(%s, %s, '{\"service\": \"ci-runner\"}')",
                              [conn.info.backend_pid, start])
            conn.execute("TRUNCATE app.orders")
            assert conn.execute("SELECT count(*) FROM app.orders").fetchone() == (0,)
    finally:
        gc.destroy()


# -- the agent side -----------------------------------------------------------------------------

def test_service_rules_first_match_wins() -> None:
    rules = [ServiceRule("ai-agent", exe="/usr/bin/python3*", cmdline=r"-m my_ai_agent\b"),
             ServiceRule("billing", unit="billing*.service"),
             ServiceRule("batch", container="3f2a*", uid=1001),
             ServiceRule("ops", user="ops-*"),
             ServiceRule("python", exe="/usr/bin/python3*")]
    from agent.attest import service_for

    assert service_for(rules, {"exe": "/usr/bin/python3.11", "cmdline": "python3 -m my_ai_agent"
                                                               " --fast"}) == "ai-agent"
    assert service_for(rules, {"exe": "/usr/bin/python3.11", "cmdline": "python3 -m other",
                               "systemd_unit": "billing-eu.service"}) == "billing"
    assert service_for(rules, {"container_id": "3f2a" + "0" * 60, "uid": 1001}) == "batch"
    assert service_for(rules, {"container_id": "3f2a" + "0" * 60, "uid": 0}) is None
    assert service_for(rules, {"user": "ops-alice", "exe": "/bin/psql"}) == "ops"
    assert service_for(rules, {"exe": "/usr/bin/python3", "cmdline": None}) == "python"
    assert service_for(rules, None) is None and service_for(rules, {}) is None


def test_services_from_the_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[identity]\nattest_dsn = "host=/run/pg user=pgwarden_agent dbname={database}"\n'
                    '[[identity.services]]\nname = "ai-agent"\nexe = "/usr/bin/python3"\n'
                    'cmdline = "-m my_ai_agent"\n[[identity.services]]\nname = "billing"\n'
                    'unit = "billing.service"\n')
    cfg = load_config(path)
    assert load_services(cfg) == [ServiceRule("ai-agent", exe="/usr/bin/python3",
                                              cmdline="-m my_ai_agent"),
                                  ServiceRule("billing", unit="billing.service")]
    assert attest_dsn(cfg).endswith("dbname={database}")
    for bad, message in (('name = "x"\nexe2 = "y"', "unknown key"),
                         ('exe = "y"', "name"), ('name = "x"', "at least one"),
                         ('name = "x"\ncmdline = "(("', "regular expression"),
                         ('name = "x"\nuid = "0"', "uid must be an integer")):
        path.write_text(f"[[identity.services]]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_services(load_config(path))


def test_attestor_registers_live_backends_and_reports_decisions(mc: MaskedCluster,
                                                                db: str) -> None:
    results: list[AttestResult] = []
    rules = [ServiceRule("ai-agent", cmdline="my_ai_agent"), ServiceRule("billing", exe="*")]
    a = Attestor(mc.dsn("{database}", "pgwarden_agent"), rules, on_result=results.append)
    try:
        with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as c1, \
                psycopg.connect(mc.dsn(db, "app"), autocommit=True) as c2:
            for conn, cmd in ((c1, "python3 -m my_ai_agent"), (c2, "python3 billing.py")):
                us = int(backend_start(conn).timestamp() * 1e6)
                a.submit(db, conn.info.backend_pid, us, {"pid": os.getpid(), "exe":
                                                         "/usr/bin/python3", "cmdline": cmd})
            a.submit(db, c1.info.backend_pid, 1_000_000, {"exe": "/x"})  # stale start
            # a pid no backend has: maybe not listed yet (before authentication), retried
            a.submit(db, 4_000_000, int(time.time() * 1e6), {"exe": "/x"})
            assert wait_for(lambda: len(results) == 4, timeout=30), a.stats()
            assert identity_of(c1) == "ai-agent" and identity_of(c2) == "billing"
            assert c2.execute("SELECT email FROM customers WHERE id = 1").fetchone() == (
                mc.customers[0]["email"],)
            pids = c1.info.backend_pid, c2.info.backend_pid
    finally:
        a.stop()
    by = {(r.backend_pid, r.decision.get("identity")): r for r in results}
    assert by[(pids[0], "ai-agent")].decision["masked"] is True
    assert by[(pids[1], "billing")].decision["masked"] is False
    stats = a.stats()
    assert (stats["submitted"], stats["attested"], stats["refused"]) == (4, 2, 2)
    assert stats["retried"] == 9  # only the missing pid, 9 times, then refused
    a.submit(db, 1, 1, None)  # after stop: ignored, no error
    assert a.stats()["submitted"] == 4


def test_attestor_never_blocks_nor_raises_and_counts_drops(mc: MaskedCluster, db: str) -> None:
    # a "database" that accepts TCP connections and never answers: the attestor thread waits
    # in connect() while submit() keeps returning at once, dropping what does not fit
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    a = Attestor(f"host=127.0.0.1 port={port} user=pgwarden_agent dbname={{database}}",
                 queue_size=5, connect_timeout_s=3)
    try:
        for i in range(500):
            a.submit("app", 100 + i, 0, {"exe": "/usr/bin/psql"})
        stats = a.stats()
        assert stats["submitted"] + stats["dropped_full"] == 500
        assert stats["dropped_full"] >= 490
    finally:
        a.stop(timeout=10)
        silent.close()
    b = Attestor(mc.dsn("{database}", "pgwarden_agent"), retry_s=0.2)
    try:
        b.submit("no_such_db", 1, 0, None)
        b.submit("postgres", 1, 0, None)  # pgwarden is not installed there
        assert wait_for(lambda: b.stats()["queued"] == 0 and b.stats()["dropped_unavailable"] == 1
                        and b.stats()["dropped_no_extension"] == 1, timeout=20), b.stats()
        b.submit("postgres", 2, 0, None)  # remembered for a while: not tried again
        assert wait_for(lambda: b.stats()["dropped_no_extension"] == 2, timeout=20), b.stats()
        mc.sql("postgres", "CREATE DATABASE no_such_db")
        time.sleep(0.3)  # past retry_s: the next registration connects again
        with psycopg.connect(mc.dsn("no_such_db"), autocommit=True) as conn:
            b.submit("no_such_db", conn.info.backend_pid, int(backend_start(conn).timestamp()
                                                              * 1e6), None)
            assert wait_for(lambda: b.stats()["dropped_no_extension"] == 3, timeout=20), b.stats()
    finally:
        b.stop()


def test_attestor_reconnects_after_its_connection_is_killed(mc: MaskedCluster, db: str) -> None:
    results: list[AttestResult] = []
    a = Attestor(mc.dsn("{database}", "pgwarden_agent"), on_result=results.append)
    try:
        for round_ in range(2):
            with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn:
                a.submit(db, conn.info.backend_pid,
                         int(backend_start(conn).timestamp() * 1e6), {"service": "billing"})
                assert wait_for(lambda: len(results) == round_ + 1, timeout=20), a.stats()
                assert identity_of(conn) == "billing"
            mc.sql(db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE usename = 'pgwarden_agent'")
    finally:
        a.stop()
    assert a.stats()["connects"] == 2 and a.stats()["attested"] == 2


def test_unattested_masked_by_default_per_policy(mc: MaskedCluster) -> None:
    db = mc.new_db()
    text = mc.policy_text.replace("identities: [ai-agent]", "identities: ['*']") + \
        "  unmask:\n    identities: [billing]\n"
    client.apply(mc.dsn(db), load(text), None)
    with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn:
        for identity, masked in (({"service": "cron"}, True), ({"service": "billing"}, False),
                                 ({}, True)):
            out = mc.attest(db, conn, identity)
            assert out["masked"] is masked
            email = conn.execute("SELECT email FROM customers WHERE id = 1").fetchone()[0]
            assert (email == mc.customers[0]["email"]) is not masked


def test_identity_command(mc: MaskedCluster, db: str) -> None:
    from click.testing import CliRunner

    from agent.cli import main

    with psycopg.connect(mc.dsn(db, "app", application_name="billing"),
                         autocommit=True) as forged, \
            psycopg.connect(mc.dsn(db, "app"), autocommit=True) as billing:
        mc.attest(db, billing, {"service": "billing", "exe": "/usr/bin/python3", "pid": 77})
        res = CliRunner().invoke(main, ["identity", "--dsn", mc.dsn(db), "--json"])
        assert res.exit_code == 0, res.output
        rows = {r["pid"]: r for r in map(json.loads, res.output.splitlines())}
        assert rows[billing.info.backend_pid]["identity"] == "billing"
        assert rows[billing.info.backend_pid]["masked"] is False
        assert rows[forged.info.backend_pid]["application_name"] == "billing"
        assert rows[forged.info.backend_pid]["attested"] is False
        assert rows[forged.info.backend_pid]["masked"] is True
        text = CliRunner().invoke(main, ["identity", "--dsn", mc.dsn(db), "--all-databases"])
        assert text.exit_code == 0
        line = [x for x in text.output.splitlines() if x.startswith(str(billing.info.backend_pid))]
        assert "billing" in line[0] and "no (identity)" in line[0] and "exe /usr/bin/python3" \
            in line[0]
        forged_line = [x for x in text.output.splitlines()
                       if x.startswith(str(forged.info.backend_pid))][0]
        assert "unattested" in forged_line and "yes (identity)" in forged_line
    denied = CliRunner().invoke(main, ["identity", "--dsn", mc.dsn(db, "app")])
    assert denied.exit_code == 1 and "permission denied" in denied.output

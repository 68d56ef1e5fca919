"""Masking acceptance: a database seeded with PII, a policy built from `pgwarden discover`'s own
suggestions (verbatim), real clients (psql, psycopg with bind parameters, pgbench custom
scripts), the same SQL for everyone:

* the AI agent's role (masked in every session) gets placeholders for every discovered column;
  a role masking does not govern gets the real values;
* one role shared by two client programs (real processes): the billing service, attested as
  "billing", gets real values; the AI agent, attested as "ai-agent", gets masked ones; a
  session not attested (yet) gets masked ones; a forged application_name or custom setting
  changes nothing. Registration goes through agent.attest.Attestor, with the identity read
  from /proc by agent.identity.describe_process, as the host agent does.

Cluster and seed: agent.masking.testing.MaskedCluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.attest import Attestor, AttestResult, ServiceRule
from agent.identity import describe_process
from agent.masking.testing import MaskedCluster, backend_start
from agent.pgcluster import wait_for

pytestmark = pytest.mark.pg
DISCOVERED = ("full_name", "email", "phone", "card_number", "ssn", "iban", "api_key",
              "session_token", "birth_date")
SAME_SQL = "SELECT id, " + ", ".join(DISCOVERED) + " FROM customers WHERE id <= 20 ORDER BY id"


@pytest.fixture(scope="module")
def mc() -> Iterator[MaskedCluster]:
    m = MaskedCluster().start()
    yield m
    m.destroy()


@pytest.fixture(scope="module")
def db(mc: MaskedCluster) -> str:
    return mc.new_db()


def test_policy_is_discover_suggestions_verbatim(mc: MaskedCluster) -> None:
    assert mc.policy_text.startswith("version: 1\n" + mc.suggestions.rstrip("\n"))
    columns = {(c["table"], c["column"]) for c in mc.policy.doc["masking"]["columns"]}
    assert {("customers", c) for c in DISCOVERED} <= columns
    assert {("orders", "card_number"), ("newsletter", "email")} <= columns
    assert ("customers", "status") not in columns and ("orders", "amount") not in columns


def test_psql_masked_role_gets_placeholders_unmasked_role_real_values(mc: MaskedCluster,
                                                                      db: str) -> None:
    masked = mc.psql(db, "ai_reader", SAME_SQL)
    real = mc.psql(db, "analyst", SAME_SQL)
    assert masked.ok and real.ok, (masked, real)
    assert mc.leaks(masked.text) == []
    first20 = mc.customers[:20]
    for row in first20:
        for col in ("full_name", "email", "phone", "card_number", "ssn", "iban", "api_key",
                    "session_token"):
            assert row[col] in real.text
        assert row["birth_date"].isoformat() in real.text
    lines = [line for line in masked.text.splitlines() if line.strip().startswith("1 |")]
    cells = [c.strip() for c in lines[0].split("|")]
    name, email, phone = first20[0]["full_name"], first20[0]["email"], first20[0]["phone"]
    assert cells[1] == f"{name[0]}*** {name.split()[-1][0]}**"                 # J*** D**
    assert cells[2] == f"{email[0]}***@{email.split('@')[1]}"                   # j***@example.com
    assert cells[3] == "******" + phone[-2:]
    assert cells[4:9] == ["[redacted]"] * 5 and cells[9] == "1900-01-01"


@pytest.mark.parametrize("prepare", [True, False])
def test_psycopg_bind_parameters(mc: MaskedCluster, db: str, prepare: bool) -> None:
    sql = ("SELECT full_name, email, phone, card_number, ssn, iban, api_key FROM customers"
           " WHERE id = ANY(%s) AND status = %s")
    ids = list(range(1, 31))
    masked = mc.psycopg(db, "ai_reader", sql, (ids, "active"), prepare=prepare)
    real = mc.psycopg(db, "analyst", sql, (ids, "active"), prepare=prepare)
    assert masked.ok and real.ok
    assert mc.leaks(masked.text) == [] and "[redacted]" in masked.text
    assert all(c["email"] in real.text for c in mc.customers[:30])
    joined = mc.psycopg(db, "ai_reader", "SELECT c.email, o.card_number, o.amount FROM orders o"
                        " JOIN customers c ON c.id = o.customer_id WHERE o.id = %s", (7,))
    assert joined.ok and mc.leaks(joined.text) == [] and "[redacted]" in joined.text


@pytest.mark.parametrize("mode", ["extended", "prepared", "simple"])
def test_pgbench_custom_script(mc: MaskedCluster, db: str, mode: str) -> None:
    script = textwrap.dedent("""\
        \\set id random(1, 200)
        SELECT full_name AS n, email AS e, phone AS p, card_number AS c, ssn AS s, iban AS i
          FROM customers WHERE id = :id \\gset
        INSERT INTO public.pgbench_seen VALUES (':n|:e|:p|:c|:s|:i')
        """) if mode == "simple" else textwrap.dedent("""\
        \\set id random(1, 200)
        SELECT full_name AS n, email AS e, phone AS p, card_number AS c, ssn AS s, iban AS i
          FROM customers WHERE id = :id \\gset
        INSERT INTO public.pgbench_seen VALUES (:n), (:e), (:p), (:c), (:s), (:i)
        """)
    masked = mc.pgbench(db, "ai_reader", script, mode)
    real = mc.pgbench(db, "analyst", script, mode)
    assert masked.ok and real.ok, (masked.text[-500:], real.text[-500:])
    assert "number of transactions actually processed: 20/20" in masked.text
    assert mc.leaks(masked.text) == [] and masked.text.count("[redacted]") >= 20 * 3
    assert len(mc.leaks(real.text)) >= 20


# -- one DB role, two programs: the attested identity decides ----------------------------------

PROGRAM = textwrap.dedent("""\
    import json, sys, psycopg
    dsn, forge = sys.argv[1], sys.argv[3] == "forge"
    conn = psycopg.connect(dsn, autocommit=True)
    start = conn.execute("SELECT backend_start FROM pg_stat_activity"
                         " WHERE pid = pg_backend_pid()").fetchone()[0]
    print(json.dumps({"backend_pid": conn.info.backend_pid,
                      "backend_start_us": int(start.timestamp() * 1_000_000)}), flush=True)
    sys.stdin.readline()  # the test attests (or not) meanwhile
    out = {}
    sql = "SELECT full_name, email, card_number FROM customers WHERE id = 3"
    out["rows"] = conn.execute(sql).fetchall()
    if forge:
        conn.execute("SET application_name = 'billing'")
        conn.execute("SET pgwarden.identity = 'billing'")
        conn.execute("SELECT set_config('pgwarden.session_identity', 'billing', false)")
        out["forged"] = conn.execute(sql).fetchall()
    out["identity"] = conn.execute("SELECT pgwarden.session_identity()").fetchone()[0]
    print(json.dumps(out), flush=True)
    """)


class Program:
    """A client program (its own process and command line) connected as role `app`."""

    def __init__(self, path: Path, dsn: str, name: str, forge: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(path), dsn, f"--program={name}", "forge" if forge else "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.backend = json.loads(self.proc.stdout.readline())

    def run(self) -> dict:  # type: ignore[type-arg]
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        assert self.proc.wait(30) == 0
        return out


def test_shared_role_two_programs_attested_identity_decides(mc: MaskedCluster, db: str,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "client_program.py"
    path.write_text(PROGRAM)
    rules = [ServiceRule("ai-agent", cmdline=r"client_program\.py .* --program=ai\b"),
             ServiceRule("billing", cmdline=r"client_program\.py .* --program=billing\b")]
    results: list[AttestResult] = []
    attestor = Attestor(mc.dsn("{database}", "pgwarden_agent"), rules, on_result=results.append)
    try:
        dsn = mc.dsn(db, "app")
        billing = Program(path, dsn, "billing", forge=False)
        ai = Program(path, dsn, "ai", forge=True)
        stranger = Program(path, dsn, "other", forge=True)  # never attested
        for p in (billing, ai):
            client = describe_process(p.proc.pid).to_event()
            attestor.submit(db, p.backend["backend_pid"], p.backend["backend_start_us"], client)
        assert wait_for(lambda: len(results) == 2, timeout=30), attestor.stats()
        seen_billing, seen_ai, seen_stranger = billing.run(), ai.run(), stranger.run()
    finally:
        attestor.stop()
    decisions = {r.decision["identity"]: r.decision for r in results}
    assert decisions["billing"]["masked"] is False and decisions["billing"]["masked_columns"] == []
    assert decisions["ai-agent"]["masked"] is True
    assert "app.customers.email" in decisions["ai-agent"]["masked_columns"]
    row = mc.customers[2]
    assert seen_billing["identity"] == "billing"
    assert seen_billing["rows"] == [[row["full_name"], row["email"], row["card_number"]]]
    for seen in (seen_ai, seen_stranger):
        text = json.dumps(seen)
        assert mc.leaks(text) == [], "a masked program saw clear PII"
        assert seen["rows"][0][2] == "[redacted]" and seen["forged"] == seen["rows"]
    assert seen_ai["identity"] == "ai-agent" and seen_stranger["identity"] is None


def test_registration_lands_after_connect_and_then_unmasks(mc: MaskedCluster, db: str) -> None:
    """Fail closed until the registration lands; measured: backend start -> row visible."""
    attestor = Attestor(mc.dsn("{database}", "pgwarden_agent"),
                        [ServiceRule("billing", exe=sys.executable)])
    latencies = []
    try:
        with psycopg.connect(mc.dsn(db), autocommit=True) as admin:
            for _ in range(10):
                with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn:
                    before = conn.execute("SELECT card_number FROM customers WHERE id = 1"
                                          ).fetchone()
                    start = backend_start(conn)
                    attestor.submit(db, conn.info.backend_pid, int(start.timestamp() * 1e6),
                                    describe_process(os.getpid()).to_event())
                    landed = wait_for(lambda: admin.execute(
                        "SELECT extract(epoch FROM clock_timestamp() - %s) FROM pgwarden.attested"
                        " WHERE pid = %s AND backend_start = %s",
                        [start, conn.info.backend_pid, start]).fetchone(), timeout=10,
                        interval=0.001)
                    assert landed, attestor.stats()
                    latencies.append(float(landed[0]) * 1000)
                    after = conn.execute("SELECT card_number FROM customers WHERE id = 1"
                                         ).fetchone()
                    assert before == ("[redacted]",) and after == (mc.customers[0]["card_number"],)
    finally:
        attestor.stop()
    latencies.sort()
    print(f"\nregistration latency (backend start -> attested row visible), ms: median "
          f"{latencies[len(latencies) // 2]:.1f}, max {latencies[-1]:.1f}")
    assert attestor.stats()["attested"] == 10

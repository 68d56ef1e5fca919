"""End to end (issue 4): the real agent attests every session.

`pgwarden agent run --config FILE` with ``[identity] attest_dsn`` and ``[[identity.services]]``
must create an agent.attest.Attestor, call ``Attestor.submit(database, backend_pid,
backend_start_us, client)`` when a session's StartupMessage is decoded, and emit a
``session.attested`` event (docs/events.md) from each AttestResult. Then two programs sharing
one DB role get real and masked values by who they are, without any registration by the test,
and the collector knows which statements read masked columns.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.masking.testing import MaskedCluster
from agent.pgcluster import make_workdir, wait_for
from agent.stack import AgentProcess, CollectorProcess

pytestmark = [pytest.mark.pg, pytest.mark.bpf]

PROGRAM = textwrap.dedent("""\
    import json, sys, time, psycopg
    conn = psycopg.connect(sys.argv[1], autocommit=True)
    for _ in range(200):  # until the agent's registration lands (fail closed before)
        if conn.execute("SELECT pgwarden.session_identity()").fetchone()[0] is not None:
            break
        time.sleep(0.05)
    rows = conn.execute("SELECT full_name, email, card_number FROM customers WHERE id = 3"
                        ).fetchall()
    print(json.dumps({"identity": conn.execute("SELECT pgwarden.session_identity()"
                                                ).fetchone()[0], "rows": rows}), flush=True)
    sys.stdin.read()  # stay connected until the test has looked at this backend's registration
    """)


@pytest.fixture(scope="module")
def mc() -> Iterator[MaskedCluster]:
    m = MaskedCluster(rows=20).start()
    yield m
    m.destroy()


def test_agent_attests_sessions_and_the_collector_knows_who_saw_masked_data(
        mc: MaskedCluster) -> None:
    db = mc.new_db()
    work = make_workdir("pgwarden-attest-e2e-")
    program = work / "client_program.py"
    program.write_text(PROGRAM)
    config = work / "config.toml"
    config.write_text(
        "[identity]\n"
        f'attest_dsn = "{mc.dsn("{database}", "pgwarden_agent")}"\n'
        '[[identity.services]]\nname = "ai-agent"\ncmdline = "client_program\\\\.py .* ai$"\n'
        '[[identity.services]]\nname = "billing"\ncmdline = "client_program\\\\.py .* billing$"\n')
    store = str(work / "collector.db")
    collector = CollectorProcess(store, log_path=work / "collector.log").start()
    agent = AgentProcess(collector.url, work / "agent",
                         ports=(mc.cluster.port,), log_path=work / "agent.log",
                         config_path=config).start()
    ai = None
    try:
        seen = {}
        out = subprocess.run([sys.executable, str(program), mc.dsn(db, "app"), "billing"],
                             input="", capture_output=True, text=True, timeout=60, check=True)
        seen["billing"] = json.loads(out.stdout)
        # The ai program stays connected while its registration is read: the agent removes
        # the rows of exited backends whenever it attests another one (this test's own query).
        ai = subprocess.Popen([sys.executable, str(program), mc.dsn(db, "app"), "ai"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert ai.stdout is not None and ai.stdin is not None
        seen["ai"] = json.loads(ai.stdout.readline() or "null")
        row = mc.customers[2]
        assert seen["billing"] == {"identity": "billing", "rows": [[row["full_name"],
                                                                    row["email"],
                                                                    row["card_number"]]]}
        assert seen["ai"]["identity"] == "ai-agent" and mc.leaks(json.dumps(seen["ai"])) == []
        landed = mc.sql(db, "SELECT extract(epoch FROM attested_at - backend_start) * 1000"
                            " FROM pgwarden.attested WHERE identity = 'ai-agent'")
        ai.stdin.close()
        assert ai.wait(timeout=60) == 0
        print(f"\nregistration by the agent landed {float(landed[0][0]):.1f} ms after the "
              "backend started (from its fork, through authentication)")

        def masked_statements() -> list[dict]:  # type: ignore[type-arg]
            res = CliRunner().invoke(main, ["statements", "--store", store, "--masked",
                                            "--json"])
            return [json.loads(line) for line in res.stdout.splitlines()]

        rows = wait_for(lambda: [r for r in masked_statements()
                                 if "card_number" in (r["statement"] or "")], timeout=60)
        assert rows and all(r["identity"] == "ai-agent" for r in rows)
        assert "app.customers.card_number" in rows[0]["masked_columns"]
    finally:
        if ai is not None and ai.poll() is None:
            ai.kill()
        agent.stop()
        collector.stop()
    shutil.rmtree(work, ignore_errors=True)  # kept for a look when the test fails

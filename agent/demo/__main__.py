"""`make demo`: capture a throwaway PostgreSQL 15 end to end and show what was captured.

Starts a cluster (TCP, unix socket and TLS), the collector and the eBPF agent, runs a workload
from unchanged clients (psql over the unix socket and over TLS, pgbench, a psycopg program with
bind parameters), stops the agent (it flushes), and prints `pgwarden sessions` and
`pgwarden statements`. The collector's store is kept in ./demo-run/ for further queries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from agent.pgcluster import PG_BIN, PgCluster, make_workdir
from agent.stack import PGWARDEN, AgentProcess, CollectorProcess

SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text, email text, phone text);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, amount numeric);
INSERT INTO customers (name, email, phone) VALUES
  ('Jane Doe', 'jane@example.com', '+1 555 0100'), ('John Roe', 'john@example.com', '+1 555 0101'),
  ('Ada Lovelace', 'ada@example.org', '+44 20 7946 0000');
INSERT INTO orders (customer_id, amount) VALUES (1, 12.50), (1, 99), (2, 7);
"""


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root (eBPF probes): try sudo make demo", file=sys.stderr)
        return 1
    out_dir = Path("demo-run").resolve()
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    store = str(out_dir / "collector.db")
    cluster = PgCluster(make_workdir("pgwarden-demo-"), ssl=True)
    collector = CollectorProcess(store, token="demo-token", log_path=out_dir / "collector.log")
    agent = AgentProcess(collector.url, out_dir / "agent", token="demo-token",
                         ports=(cluster.port,), log_path=out_dir / "agent.log")
    try:
        step(f"starting a throwaway PostgreSQL 15 on port {cluster.port} (TCP, unix socket, TLS)")
        cluster.start()
        cluster.psql("CREATE DATABASE shop")
        step(f"starting the collector on {collector.url} (store {store})")
        collector.start()
        step("starting the eBPF agent")
        agent.start()
        print((out_dir / "agent.log").read_text().strip().splitlines()[-1])

        step("workload from unchanged clients")
        print("  psql over the unix socket: schema, data, a query and a mistake")
        cluster.psql(SCHEMA, dbname="shop", via="unix")
        cluster.psql("SELECT name, email FROM customers WHERE id = 1", dbname="shop", via="unix")
        cluster.psql("SELECT * FROM no_such_table", dbname="shop", via="unix", check=False)
        print("  psql over TCP with TLS (sslmode=require): captured in plaintext above TLS")
        cluster.psql("UPDATE customers SET phone = '+1 555 0199' WHERE id = 2", dbname="shop",
                     via="tcp", sslmode="require")
        print("  psycopg 3 program with bind parameters (application_name=billing-service)")
        run([sys.executable, "-m", "agent.demo.client", cluster.dsn("shop")])
        print("  pgbench: initialise, then 2 clients x 50 transactions, extended protocol")
        env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "postgres"}
        run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", "1", "shop"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run([str(PG_BIN / "pgbench"), "-c", "2", "-t", "50", "-M", "extended", "-n", "shop"],
            env=env, stdout=subprocess.DEVNULL)

        step("stopping the agent (it flushes everything to the collector)")
        agent.stop()
        status = agent.status()
        print(f"  sessions {status['counters'].get('sessions')}, statements "
              f"{status['counters'].get('statements')}, drops {sum(status['drops'].values())}, "
              f"spooled batches {status['shipping'].get('spool_batches')}")

        # tables fit the terminal; give them room when the output is not one (CI, a pipe)
        wide = {**os.environ, "COLUMNS": str(max(shutil.get_terminal_size((160, 40)).columns, 160))}
        for title, args in (
            ("who connected", ["sessions"]),
            ("what psql ran (unix socket and TLS)", ["statements", "--client-exe", "psql"]),
            ("what the psycopg program ran (bind values not stored: normalized text)",
             ["statements", "--client-exe", "python"]),
            ("what failed", ["statements", "--error"]),
            ("one statement as JSON", ["statements", "--table", "pgbench_accounts", "--json",
                                       "--limit", "1"]),
        ):
            step(f"{title}: pgwarden {' '.join(args)} --store {store}")
            run([*PGWARDEN, *args, "--store", store], env=wide)
        print(f"\nThe store is kept in {out_dir}. Try: .venv/bin/pgwarden statements --store {store} "
              "--client-exe psql --json")
        return 0
    finally:
        agent.stop()
        collector.stop()
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())

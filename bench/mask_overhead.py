"""Masking overhead: a masked principal vs an unmasked one reading the same 1,000,000-row table
with 4 PII columns, through the same SQL.

    python -m bench.mask_overhead [--rows 1000000] [--rounds 5] [--seconds 10] [--clients 2]

One throwaway cluster, pgwarden installed, ``app.people`` (id, full_name, email, phone, ssn,
city, created_at) with a masking policy on the four PII columns (names and emails and phones
partial: ``J*** D**``, ``j***@example.com``, ``******42``; SSNs redacted). Principals:

* ``unmasked``: not governed by masking, reads the table itself (the baseline);
* ``masked``: masked in every session (``masking.mask.roles``): reads ``pgwarden_mask_app``
  views, where each PII column is its masking expression;
* ``shared``: a role shared by several programs (``masking.shared_roles``): reads
  ``pgwarden_gate_app`` views, where the attested identity decides once per statement; measured
  both unattested (masked) and attested as an unmasked service (real values).

Workloads, each as the same SQL for every principal:

* full scan read by the client: ``COPY (SELECT full_name, email, phone, ssn FROM people) TO
  STDOUT`` (every row crosses the wire; psycopg reads it);
* full scan in the server only: ``SELECT sum(length(full_name) + length(email) + ...)``
  (masking every value, nothing sent: the pessimistic case);
* indexed point lookups: a pgbench custom script (``-f``) selecting the 4 columns by a random
  id, ``-M prepared`` and ``-M simple``, ``--clients`` clients.

Runs are interleaved in one process (the order rotates every round) so machine noise hits every
side alike; the median of each side and the ratio masked / unmasked (throughput) are printed.
This is a benchmark, not a test: it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from agent.db import install as installer
from agent.pgcluster import PG_BIN, PgCluster, make_workdir
from agent.policy import client
from agent.policy.schema import load

DB = "maskbench"
POLICY = """\
version: 1
masking:
  mask:
    roles: [masked]
    identities: [ai-agent]
  shared_roles: [shared]
  columns:
    app.people.full_name: {class: person_name, method: partial}
    app.people.email: {class: email, method: partial}
    app.people.phone: {class: phone, method: partial}
    app.people.ssn: {class: national_id, method: redact}
"""
SEED = """
CREATE ROLE app_owner; CREATE ROLE masked LOGIN; CREATE ROLE unmasked LOGIN;
CREATE ROLE shared LOGIN;
CREATE SCHEMA app AUTHORIZATION app_owner;
CREATE TABLE app.people (id int PRIMARY KEY, full_name text NOT NULL, email text NOT NULL,
                         phone text, ssn text, city text, created_at date NOT NULL);
ALTER TABLE app.people OWNER TO app_owner;
INSERT INTO app.people
SELECT g, (ARRAY['Johannes','Margaret','Christopher','Isabella','Alexander'])[1 + g % 5] || ' '
          || (ARRAY['Harrington','Whitfield','Montgomery','Castellano'])[1 + g % 4],
       'user' || g || '@example.com', '+1555' || lpad(g::text, 7, '0'),
       lpad((100 + g % 800)::text, 3, '0') || '-' || lpad((1 + g % 98)::text, 2, '0') || '-'
          || lpad((1 + g % 9998)::text, 4, '0'),
       (ARRAY['Lisbon','Oslo','Lyon'])[1 + g % 3], DATE '2020-01-01' + g % 1500
  FROM generate_series(1, %(rows)s) g;
GRANT USAGE ON SCHEMA app TO masked, unmasked, shared;
GRANT SELECT ON app.people TO masked, unmasked, shared;
ALTER ROLE masked SET search_path = app, public;
ALTER ROLE unmasked SET search_path = app, public;
ALTER ROLE shared SET search_path = app, public;
"""
COLUMNS = "full_name, email, phone, ssn"
SCAN_COPY = f"COPY (SELECT {COLUMNS} FROM people) TO STDOUT"
SCAN_SERVER = ("SELECT sum(length(full_name) + length(email) + length(phone) + length(ssn))"
               " FROM people")
LOOKUP = f"\\set id random(1, {{rows}})\nSELECT {COLUMNS} FROM people WHERE id = :id;\n"


class Side:
    """One principal's connection (attested when `service` is given)."""

    def __init__(self, cluster: PgCluster, user: str, service: str | None = None) -> None:
        self.user = user
        self.conn = psycopg.connect(cluster.dsn(DB, user, "unix"), autocommit=True)
        if service is not None:
            with psycopg.connect(cluster.dsn(DB, "pgwarden_agent", "unix"),
                                 autocommit=True) as agent:
                start = self.conn.execute("SELECT backend_start FROM pg_stat_activity"
                                          " WHERE pid = pg_backend_pid()").fetchone()[0]
                agent.execute("SELECT pgwarden.attest(%s, %s, %s::jsonb)",
                              [self.conn.info.backend_pid, start,
                               json.dumps({"service": service})])

    def sample(self) -> str:
        row = self.conn.execute(f"SELECT {COLUMNS} FROM people WHERE id = 42").fetchone()
        return " | ".join(map(str, row))

    def copy_scan(self) -> float:
        t = time.perf_counter()
        n = 0
        with self.conn.cursor().copy(SCAN_COPY) as copy:
            for data in copy:
                n += len(data)
        return time.perf_counter() - t

    def server_scan(self) -> float:
        t = time.perf_counter()
        self.conn.execute(SCAN_SERVER).fetchone()
        return time.perf_counter() - t


def pgbench(cluster: PgCluster, user: str, script: Path, mode: str, seconds: int,
            clients: int) -> float:
    p = subprocess.run([str(PG_BIN / "pgbench"), "-n", "-M", mode, "-c", str(clients),
                        "-j", str(clients), "-T", str(seconds), "-f", str(script),
                        cluster.dsn(DB, user, "unix")], capture_output=True, text=True,
                       timeout=seconds * 4 + 60)
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"pgbench as {user} failed: {p.stderr.strip()[-800:]}")
    return float(m.group(1))


def interleave(rounds: int, sides: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    names = list(sides)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            out[n].append(sides[n]())
    return out


def report(title: str, results: dict[str, list[float]], unit: str, higher_is_better: bool,
           baseline: str = "unmasked") -> None:
    base = statistics.median(results[baseline])
    print(f"\n{title}")
    for name, values in results.items():
        med = statistics.median(values)
        ratio = med / base if higher_is_better else base / med
        print(f"  {name:<22} median {med:10.3f} {unit}   throughput vs unmasked {ratio:5.2f}"
              f"   (runs: {', '.join(f'{v:.3f}' for v in values)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10, help="per pgbench run")
    ap.add_argument("--clients", type=int, default=2)
    args = ap.parse_args()

    cluster = PgCluster(make_workdir("pgwarden-maskbench-"),
                        settings={"shared_buffers": "'512MB'"})
    cluster.start()
    try:
        t = time.perf_counter()
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        installer.install(cluster.dsn(DB, via="unix"))
        with psycopg.connect(cluster.dsn(DB, via="unix"), autocommit=True) as conn:
            conn.execute(SEED.replace("%(rows)s", str(args.rows)))
            conn.execute("VACUUM ANALYZE app.people")
        client.apply(cluster.dsn(DB, via="unix"), load(POLICY), None)
        print(f"setup: {args.rows} rows, policy applied in {time.perf_counter() - t:.1f} s")
        sides = {"unmasked": Side(cluster, "unmasked"), "masked": Side(cluster, "masked"),
                 "shared, attested billing": Side(cluster, "shared", "billing"),
                 "shared, unattested": Side(cluster, "shared")}
        for name, side in sides.items():
            print(f"  {name:<26} id 42 -> {side.sample()}")
        for side in sides.values():  # warm the cache and the views' plans
            side.copy_scan()
        report("full scan, every row read by the client (COPY ... TO STDOUT), seconds",
               interleave(args.rounds, {n: s.copy_scan for n, s in sides.items()}), "s", False)
        report("full scan in the server only (sum of lengths of the masked values), seconds",
               interleave(args.rounds, {n: s.server_scan for n, s in sides.items()}), "s", False)
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "lookup.sql"
            script.write_text(LOOKUP.replace("{rows}", str(args.rows)))
            script.chmod(0o644)
            Path(tmp).chmod(0o755)
            for mode in ("prepared", "simple"):
                runs = {user: (lambda u=user, m=mode: pgbench(cluster, u, script, m,
                                                              args.seconds, args.clients))
                        for user in ("unmasked", "masked", "shared")}
                results = interleave(args.rounds, runs)
                results["shared (unattested: masked)"] = results.pop("shared")
                report(f"indexed point lookups, pgbench -M {mode}, {args.clients} clients, TPS",
                       results, "tps", True)
        for side in sides.values():
            side.conn.close()
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()

"""Guardrail overhead: pgbench tpcb-like with pgwarden guarding the pgbench tables vs without.

    python -m bench.guard_overhead [--rounds 5] [--seconds 15] [--clients 4] [--scale 10]
                                   [--modes simple,prepared]

One throwaway cluster, three databases initialized identically by ``pgbench -i``: ``plain``
(no pgwarden); ``guarded`` (pgwarden installed, a policy guarding all four pgbench tables with
every rule on: require_where, max_rows per statement and per transaction, protected key columns
aid/tid/bid, no_truncate, no_drop, opaque_write); ``nocols`` (the same without protected
columns: a BEFORE UPDATE row trigger makes PostgreSQL lock and fetch every updated row before
it even looks at the column list, so that rule has a cost of its own). Runs are INTERLEAVED in
one process (the order rotates every round) so machine noise hits every side alike; the median
TPS of each side and the ratios are printed per protocol mode. Then, per guarded UPDATE/DELETE, where
the time goes inside pgwarden's functions (one client, ``track_functions = pl``, read back from
pg_stat_user_functions: the PL/pgSQL trigger's own work, the PL/Python hot path, the full check
amortized over all firings). Also measured: the cost pgwarden adds
to the first guarded statement of a new backend (PL/Python start + lazy sqlglot import) and
sqlglot's import and parse cost in the server's Python.

This is a benchmark, not a test: it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from agent.db import install as installer
from agent.pgcluster import PG_BIN, PgCluster
from agent.policy import client
from agent.policy.schema import load

POLICY = """\
version: 1
protect:
  - name: bench
    tables: [public.pgbench_accounts, public.pgbench_tellers, public.pgbench_branches,
             public.pgbench_history]
    columns: [aid, tid, bid]
    rules:
      max_rows: {statement: 1000, transaction: 10000}
"""

UPDATE = "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"


def pgbench(cluster: PgCluster, db: str, mode: str, seconds: int, clients: int) -> float:
    """TPS of one pgbench tpcb-like run (no vacuum: it would TRUNCATE pgbench_history)."""
    p = subprocess.run([str(PG_BIN / "pgbench"), "-n", "-M", mode, "-c", str(clients),
                        "-j", str(max(1, clients // 2)), "-T", str(seconds),
                        cluster.dsn(db, via="unix")], capture_output=True, text=True,
                       timeout=seconds * 4 + 60)
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"pgbench on {db} failed: {p.stderr.strip()[-800:]}")
    return float(m.group(1))


DATABASES = ("plain", "guarded", "nocols")


def setup(cluster: PgCluster, scale: int) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        for db in DATABASES:
            conn.execute(f"CREATE DATABASE {db}")
    for db in DATABASES:
        subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(scale),
                        cluster.dsn(db, via="unix")], check=True, capture_output=True)
    installer.install(cluster.dsn("guarded"))
    client.apply(cluster.dsn("guarded"), load(POLICY), None)
    installer.install(cluster.dsn("nocols"))
    client.apply(cluster.dsn("nocols"), load(POLICY.replace("    columns: [aid, tid, bid]\n",
                                                            "")), None)


def function_costs(cluster: PgCluster, db: str, mode: str, seconds: int) -> dict[str, float]:
    """Microseconds per tg_write firing spent in each of pgwarden's functions (total time of
    the function / firings), over a one-client tpcb-like run with track_functions = pl."""
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_reset()")
    p = subprocess.run([str(PG_BIN / "pgbench"), "-n", "-M", mode, "-c", "1", "-T", str(seconds),
                        cluster.dsn(db, via="unix", options="-ctrack_functions=pl")],
                       capture_output=True, text=True, timeout=seconds * 4 + 60)
    if p.returncode != 0:
        raise RuntimeError(f"pgbench on {db} failed: {p.stderr.strip()[-800:]}")
    time.sleep(1)  # statistics arrive when the backend exits
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        rows = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
            "SELECT funcname::text, calls, total_time, self_time FROM pg_stat_user_functions"
            " WHERE schemaname = 'pgwarden'")}
    firings = rows.get("tg_write", (0, 0.0, 0.0))[0]
    if not firings:
        return {}
    out = {"tg_write (all)": rows["tg_write"][1], "tg_write (own work)": rows["tg_write"][2]}
    for name in ("_guard_write", "_guard_write_check"):
        if name in rows:
            out[f"{name} ({rows[name][0]} calls)"] = rows[name][1]
    return {k: v * 1000 / firings for k, v in out.items()}


def first_statement_cost(cluster: PgCluster, db: str, samples: int = 5) -> tuple[float, float]:
    """(first, second) latency in ms of a guarded single-row UPDATE in a new backend."""
    first, second = [], []
    for i in range(samples):
        with psycopg.connect(cluster.dsn(db, via="unix"), autocommit=True) as conn:
            conn.execute("SELECT 1")
            for bucket in (first, second):
                t = time.perf_counter()
                conn.execute(UPDATE.replace("$1", "%s").replace("$2", "%s"), (0, i + 1))
                bucket.append((time.perf_counter() - t) * 1000)
    return statistics.median(first), statistics.median(second)


def sqlglot_cost() -> tuple[float, float, float, float]:
    """(import s, parse ms, normalize ms, cache key ms) in the server's Python."""
    pydir = installer.python_dir()
    code = f"""
import sys, time
sys.path.insert(0, {str(pydir)!r})
t = time.perf_counter(); import sqlglot; imp = time.perf_counter() - t
from pgwarden_ext import classify, lexer
sql = "UPDATE pgbench_accounts SET abalance = abalance + -2140 WHERE aid = 41203;"
classify.summarize(sql)
n = 300
t = time.perf_counter()
for _ in range(n): classify.summarize(sql)
p = (time.perf_counter() - t) / n * 1000
t = time.perf_counter()
for _ in range(n): lexer.normalize(sql)
z = (time.perf_counter() - t) / n * 1000
t = time.perf_counter()
for _ in range(n): lexer.cache_key(sql)
k = (time.perf_counter() - t) / n * 1000
print(imp, p, z, k)
"""
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                             check=True, cwd=cwd).stdout.split()
    return float(out[0]), float(out[1]), float(out[2]), float(out[3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--modes", default="simple,prepared")
    args = ap.parse_args()
    modes = args.modes.split(",")
    cluster = PgCluster(Path(tempfile.mkdtemp(prefix="pgwarden-bench-")),
                        settings={"shared_buffers": "'256MB'"})
    cluster.start()
    try:
        setup(cluster, args.scale)
        print(f"pgbench tpcb-like, scale {args.scale}, {args.clients} clients, "
              f"{args.seconds} s per run, {args.rounds} interleaved rounds per mode")
        tps: dict[tuple[str, str], list[float]] = {}
        for mode in modes:
            for r in range(args.rounds):
                order = DATABASES[r % 3:] + DATABASES[:r % 3]
                for db in order:
                    v = pgbench(cluster, db, mode, args.seconds, args.clients)
                    tps.setdefault((mode, db), []).append(v)
                    print(f"  {mode:<9} round {r + 1}  {db:<8} {v:9.1f} tps", flush=True)
        print()
        for mode in modes:
            plain = statistics.median(tps[(mode, "plain")])
            guarded = statistics.median(tps[(mode, "guarded")])
            nocols = statistics.median(tps[(mode, "nocols")])
            print(f"{mode:<9} median tps: without {plain:8.1f} | all rules {guarded:8.1f}"
                  f" ratio {guarded / plain:.3f} | all but protected columns {nocols:8.1f}"
                  f" ratio {nocols / plain:.3f}")
        for mode in modes:
            costs = function_costs(cluster, "nocols", mode, min(args.seconds, 10))
            print(f"{mode:<9} per guarded write, one client, all but protected columns: "
                  + "; ".join(f"{k} {v:.1f} us" for k, v in costs.items()))
        first, second = first_statement_cost(cluster, "guarded")
        base_first, base_second = first_statement_cost(cluster, "plain")
        print(f"first guarded UPDATE in a new backend (shape known to the database): "
              f"{first:.1f} ms (next: {second:.2f} ms); "
              f"without pgwarden: {base_first:.2f} ms (next: {base_second:.2f} ms)")
        imp, parse, norm, key = sqlglot_cost()
        print(f"server Python: import sqlglot {imp * 1000:.0f} ms (only in a backend meeting a "
              f"statement shape new to the database); classify an UPDATE (parse + walk) "
              f"{parse:.2f} ms on a cache miss; normalize {norm * 1000:.0f} us (full check); "
              f"hot-path cache key {key * 1000:.1f} us (simple protocol)")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()

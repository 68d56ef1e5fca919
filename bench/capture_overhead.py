"""Capture overhead: pgbench with and without the agent, and through pgbouncer (a proxy hop).

Run as root: `python -m bench.capture_overhead [--rounds 3] [--seconds 10]`.

At saturation (4 clients, select-only `-S` and tpcb-like), runs are interleaved within each round
(direct, agent, pgbouncer), so the machine's drift hits all three alike (this host is noisy:
±15% run to run); the medians and their ratios to direct are printed with the agent's drop
counts. At a fixed rate (`-R`, default 5,000 tx/s, select-only), interleaved the same way, it prints
p50/p90/p99 latency with and without the agent and the agent's CPU seconds per 100,000 statements.

Two agent setups: "agent+coll" ships to a collector on this same host, whose ingest competes
for the two cores; "agent" models a collector on another host (the usual deployment) with an
unreachable collector URL: the agent does all its work (capture, decode, normalize, batch,
serialize, write the spool) but sends nothing. Each agent run gets a fresh state directory, so
no spooled backlog from an earlier run is replayed into a later one.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from agent.pgcluster import PG_BIN, PgCluster, free_port, make_workdir
from agent.stack import AgentProcess, CollectorProcess

CLIENTS = 4
SETUPS = ("direct", "agent", "agent+coll", "pgbouncer")
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens; batches stay spooled


def fresh_dir(work: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="agent-", dir=work))


class Pgbouncer:
    """pgbouncer in session mode in front of the cluster, run as the postgres user."""

    def __init__(self, cluster: PgCluster, work: Path) -> None:
        self.port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        os.chown(work, *_postgres_ids())
        ini = work / "pgbouncer.ini"
        ini.write_text(
            f"[databases]\nbench = host=127.0.0.1 port={cluster.port} dbname=bench user=postgres\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\nauth_type = any\n"
            f"pool_mode = session\nmax_client_conn = 100\ndefault_pool_size = 20\n"
            f"unix_socket_dir =\nlogfile = {work}/pgbouncer.log\npidfile = {work}/pgbouncer.pid\n")
        self.proc = subprocess.Popen(["runuser", "-u", "postgres", "--", "pgbouncer", str(ini)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _postgres_ids() -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def pgbench(port: int, *args: str) -> str:
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres"}
    return subprocess.run([str(PG_BIN / "pgbench"), *args, "bench"], env=env, check=True,
                          capture_output=True, text=True).stdout


def tps(output: str) -> float:
    for line in output.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(f"no tps in pgbench output: {output[-500:]}")


def transactions(output: str) -> int:
    for line in output.splitlines():
        if line.startswith("number of transactions actually processed: "):
            return int(line.split(": ")[1].split("/")[0])
    raise RuntimeError(f"no transaction count in pgbench output: {output[-500:]}")


def latencies_us(port: int, work: Path, rate: int, seconds: int) -> list[float]:
    """Per-transaction latencies (µs) of a fixed-rate select-only run, from pgbench's -l log."""
    for old in work.glob("pgbench_log.*"):
        old.unlink()
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres"}
    subprocess.run([str(PG_BIN / "pgbench"), "-S", "-n", "-c", str(CLIENTS), "-j", "2", "-R",
                    str(rate), "-T", str(seconds), "-l", "bench"], env=env, check=True,
                   capture_output=True, cwd=work)
    values = []
    for log in work.glob("pgbench_log.*"):
        for line in log.read_text().splitlines():
            values.append(float(line.split()[2]))  # client_id tx_no time(µs) file epoch µs
    return values


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def agent_cpu_s(agent: AgentProcess) -> float:
    assert agent.proc is not None
    fields = Path(f"/proc/{agent.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--scale", type=int, default=10)
    args = ap.parse_args()

    work = make_workdir("pgwarden-bench-")
    cluster = PgCluster(work / "pg", settings={"shared_buffers": "'256MB'"})
    cluster.start()
    cluster.psql("CREATE DATABASE bench")
    pgbench(cluster.port, "-i", "-q", "-s", str(args.scale))
    bouncer = Pgbouncer(cluster, work / "pgbouncer")
    collector = CollectorProcess(str(work / "collector.db"), log_path=work / "collector.log").start()
    results: dict[tuple[str, str], list[float]] = {}
    drops: dict[str, int] = {}
    try:
        for rnd in range(1, args.rounds + 1):
            for workload, flags in (("select-only", ["-S"]), ("tpcb-like", [])):
                for setup in SETUPS:
                    agent = None
                    if setup.startswith("agent"):
                        url = collector.url if setup == "agent+coll" else UNREACHABLE
                        agent = AgentProcess(url, fresh_dir(work), ports=(cluster.port,),
                                             log_path=work / "agent.log").start()
                    port = bouncer.port if setup == "pgbouncer" else cluster.port
                    out = pgbench(port, *flags, "-n", "-c", str(CLIENTS), "-j", "2", "-T",
                                  str(args.seconds))
                    results.setdefault((workload, setup), []).append(tps(out))
                    seen = ""
                    if agent is not None:
                        time.sleep(1.5)
                        status = agent.status()
                        for k, v in status["drops"].items():
                            drops[k] = drops.get(k, 0) + v
                        agent.stop()
                        # proof the agent was capturing during the run, not merely running
                        seen = (f"  captured {status['counters'].get('statements', 0)} statements"
                                f" for {transactions(out)} transactions")
                    print(f"round {rnd} {workload:11s} {setup:10s} "
                          f"{results[(workload, setup)][-1]:9.0f} tps{seen}", flush=True)

        print(f"\nSaturation, {CLIENTS} clients, {args.seconds} s runs, {args.rounds} rounds, "
              f"median TPS (ratio to direct):")
        for workload in ("select-only", "tpcb-like"):
            direct = statistics.median(results[(workload, "direct")])
            line = [f"  {workload:11s} direct {direct:8.0f}"]
            for setup in SETUPS[1:]:
                m = statistics.median(results[(workload, setup)])
                line.append(f"{setup} {m:8.0f} ({m / direct:.2f})")
            print("  ".join(line))
        print(f"  agent drops over all runs: {drops or 'none'}")

        print(f"\nFixed rate {args.rate} tx/s select-only, {args.seconds} s runs, {args.rounds} "
              f"rounds interleaved (agent, collector elsewhere); median of each percentile:")
        pct: dict[str, dict[float, list[float]]] = {"direct": {}, "agent": {}}
        cpu = 0.0
        stmts = 0
        for _ in range(args.rounds):
            for setup in ("direct", "agent"):
                agent = None
                if setup == "agent":
                    agent = AgentProcess(UNREACHABLE, fresh_dir(work), ports=(cluster.port,),
                                         log_path=work / "agent.log").start()
                    cpu0 = agent_cpu_s(agent)
                    st0 = agent.status()["counters"].get("statements", 0)
                vals = latencies_us(cluster.port, work, args.rate, args.seconds)
                for q in (0.5, 0.9, 0.99):
                    pct[setup].setdefault(q, []).append(percentile(vals, q))
                if agent is not None:
                    time.sleep(1.5)
                    cpu += agent_cpu_s(agent) - cpu0
                    stmts += agent.status()["counters"].get("statements", 0) - st0
                    agent.stop()
        med = {k: {q: statistics.median(v) for q, v in d.items()} for k, d in pct.items()}
        for name in ("direct", "agent"):
            print(f"  {name:6s} " + "  ".join(f"p{int(q * 100)} {med[name][q]:7.0f} µs"
                                              for q in (0.5, 0.9, 0.99)))
        print("  added  " + "  ".join(f"p{int(q * 100)} {med['agent'][q] - med['direct'][q]:+7.0f} µs"
                                      for q in (0.5, 0.9, 0.99)))
        print(f"  agent CPU {cpu:.2f} s for {stmts} statements = "
              f"{cpu / max(stmts, 1) * 100_000:.2f} CPU-s per 100,000 statements")
    finally:
        collector.stop()
        bouncer.stop()
        cluster.destroy()


if __name__ == "__main__":
    main()

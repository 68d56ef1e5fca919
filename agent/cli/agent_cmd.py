"""`pgwarden agent run|status`: the host agent (thin layer over agent.runner)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import click

from agent import config as config_mod

DEFAULT_STATE_DIR = "/var/lib/pgwarden/agent"


def _state_dir(cfg: config_mod.Config, value: str | None) -> Path:
    return Path(value or cfg.get("agent", "state_dir") or DEFAULT_STATE_DIR)


@click.group()
def agent() -> None:
    """The host agent: eBPF capture of every PostgreSQL session on this host."""


@agent.command("run")
@click.option("--collector", metavar="URL", help="Collector base URL, e.g. http://10.0.0.5:7400 "
              "([agent] collector in the config file, or $PGWARDEN_COLLECTOR).")
@click.option("--token", metavar="T", help="Bearer token for the collector ($PGWARDEN_TOKEN, or "
              "[agent] token).")
@click.option("--state-dir", metavar="DIR", help=f"Spool, identity and status files "
              f"(default {DEFAULT_STATE_DIR}).")
@click.option("--capture-raw", is_flag=True, default=None,
              help="Ship statements verbatim and bind parameter values. Default: statements are "
                   "normalized (constants replaced by $n, as pg_stat_statements does) and bind "
                   "values are never shipped. Use only where the collector may hold PII.")
@click.option("--mode", type=click.Choice(["auto", "secure_rw", "syscall"]), default="auto",
              show_default=True, help="Data hooks: uprobes on postgres secure_read/secure_write "
              "(plaintext above TLS), or the recvfrom/sendto tracepoint fallback (TLS sessions are "
              "then reported as encrypted). auto picks secure_rw when the binary exports the symbols.")
@click.option("--ring-pages", type=int, default=16384, show_default=True,
              help="Data ring buffer size in 4 KiB pages (a power of two; 16384 = 64 MiB).")
@click.option("--spool-max-bytes", type=int, default=256 * 1024 * 1024, show_default=True,
              help="Bound of the on-disk spool used while the collector is unreachable.")
@click.option("--port", "ports", type=int, multiple=True, metavar="PORT",
              help="Capture only the PostgreSQL servers listening on this TCP port (repeatable; "
                   "[agent] ports). Default: every server on the host. A server started later "
                   "is picked up within seconds; its very first connections may be missed.")
@click.option("--attest-dsn", metavar="DSN",
              help="Attest each session's client to its database as role pgwarden_agent "
                   "(libpq string with {database}), so masking and guardrail policies can depend "
                   "on which program is connected ([identity] attest_dsn; docs/identity.md). "
                   "On when the config file has an [identity] section.")
@click.option("--config", "config_path", metavar="PATH", help="Configuration file (TOML).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def run(collector: str | None, token: str | None, state_dir: str | None, capture_raw: bool | None,
        mode: str, ring_pages: int, spool_max_bytes: int, ports: tuple[int, ...],
        attest_dsn: str | None, config_path: str | None, verbose: bool) -> None:
    """Capture every PostgreSQL session on this host and ship it to a collector.

    Finds the running postmasters (and ones started later), attaches eBPF probes to their
    binary, tracks each client backend from its accept() and decodes its protocol stream:
    sessions, statements, errors, row counts, and the local client process behind each
    connection. Backends already running are attached mid-session and their gap is reported.

    Prints one status line when attached; runs until SIGINT or SIGTERM, then flushes and spools
    what the collector has not acknowledged. Needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE).

    \b
    Exit codes: 0 stopped cleanly, 1 probes could not be loaded, 2 usage error.
    """
    from agent.attest import attest_dsn as configured_attest_dsn
    from agent.attest import load_services
    from agent.runner import Agent, AgentOptions, ProbeError

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s pgwarden-agent %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per batch is noise
    cfg = config_mod.load(config_path)
    collector = collector or os.environ.get("PGWARDEN_COLLECTOR") or cfg.get("agent", "collector")
    token = token or os.environ.get("PGWARDEN_TOKEN") or cfg.get("agent", "token")
    if not collector:
        raise click.UsageError("no collector: pass --collector URL (or set [agent] collector)")
    if not token:
        raise click.UsageError("no token: pass --token, set $PGWARDEN_TOKEN or [agent] token")
    if ring_pages <= 0 or ring_pages & (ring_pages - 1):
        raise click.UsageError(f"--ring-pages {ring_pages} is not a power of two")
    raw = capture_raw if capture_raw is not None else bool(cfg.get("agent", "capture_raw", False))
    try:
        services = tuple(load_services(cfg))
        if attest_dsn is None and "identity" in cfg.data:
            attest_dsn = configured_attest_dsn(cfg)
    except config_mod.ConfigError as e:
        raise click.UsageError(str(e)) from None
    opts = AgentOptions(collector=collector, token=token, state_dir=_state_dir(cfg, state_dir),
                        mode=mode, capture_raw=raw, data_ring_pages=ring_pages,
                        spool_max_bytes=spool_max_bytes,
                        only_ports=frozenset(ports or cfg.get("agent", "ports", ())),
                        attest_dsn=attest_dsn, services=services)
    agent_ = Agent(opts)
    try:
        agent_.start()
    except ProbeError as e:
        click.echo(f"pgwarden agent: {e}", err=True)
        sys.exit(1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent_.stop())
    click.echo(agent_.status_line(), err=True)
    agent_.run()
    click.echo("pgwarden agent: stopped", err=True)


@agent.command("status")
@click.option("--state-dir", metavar="DIR", help=f"The agent's state directory (default "
              f"{DEFAULT_STATE_DIR}).")
@click.option("--json", "as_json", is_flag=True, help="Print the full status as one JSON object.")
@click.option("--config", "config_path", metavar="PATH", help="Configuration file (TOML).")
def status(state_dir: str | None, as_json: bool, config_path: str | None) -> None:
    """Show a running agent's counters: events, statements, drops by reason, spool size.

    \b
    Exit codes: 0 the agent is running, 1 it is not (the last status it wrote is shown),
    3 no agent ever ran with this state directory.
    """
    from agent.runner import read_status

    cfg = config_mod.load(config_path)
    st = read_status(_state_dir(cfg, state_dir))
    if st is None:
        click.echo("pgwarden agent: no status file: no agent has run with this state directory",
                   err=True)
        sys.exit(3)
    alive = st.get("running") and _pid_alive(st["pid"]) and time.time() - st["updated_at"] < 10
    st["running"] = bool(alive)
    if as_json:
        click.echo(json.dumps(st))
    else:
        _print_status(st)
    sys.exit(0 if alive else 1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _print_status(st: dict) -> None:  # type: ignore[type-arg]
    from rich.console import Console
    from rich.table import Table

    console = Console()
    state = "running" if st["running"] else "NOT running (last status shown)"
    console.print(f"pgwarden agent {st['version']} pid {st['pid']}: {state}; mode {st['mode']} "
                  f"({st['mode_reason']}); collector {st['collector']}")
    table = Table(show_header=True, header_style="bold")
    table.add_column("counter")
    table.add_column("value", justify="right")
    c = st.get("counters", {})
    for key in ("sessions", "statements", "events", "gaps"):
        table.add_row(key, str(c.get(key, 0)))
    table.add_row("open sessions", str(st.get("sessions_open", 0)))
    ship = st.get("shipping", {})
    table.add_row("spool batches", str(ship.get("spool_batches", 0)))
    table.add_row("spool bytes", str(ship.get("spool_bytes", 0)))
    table.add_row("collector up", str(ship.get("collector_up")))
    for reason, n in sorted(st.get("drops", {}).items()):
        table.add_row(f"drops: {reason}", f"[red]{n}[/red]" if n else "0")
    console.print(table)

"""`pgwarden notify`: deliver approval events to webhooks (agent/notify.py, docs/approvals.md)."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import click
import psycopg

from agent import notify as relay
from agent.db.conn import DbError

def _hooks(options: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--dsn", envvar="PGWARDEN_DSN", required=True, metavar="DSN",
                     help="libpq connection string of a pgwarden admin (env PGWARDEN_DSN)."),
        click.option("--webhook", "json_hooks", multiple=True, metavar="NAME=URL",
                     help="A generic JSON webhook, signed with HMAC-SHA256 "
                          "(X-Pgwarden-Signature). Repeatable."),
        click.option("--slack", "slack_hooks", multiple=True, metavar="NAME=URL",
                     help="A Slack-compatible incoming webhook. Repeatable."),
        click.option("--collector", default=None, metavar="URL",
                     help="Also send every event to this collector (links refused statements "
                          "and their approved runs in `pgwarden session ID`)."),
        click.option("--secret-env", default="PGWARDEN_WEBHOOK_SECRET", show_default=True,
                     metavar="VAR", help="Environment variable holding the HMAC key of the "
                                         "JSON webhooks (never on the command line)."),
        click.option("--token-env", default="PGWARDEN_COLLECTOR_TOKEN", show_default=True,
                     metavar="VAR", help="Environment variable holding the collector's token."),
    ]):
        options = opt(options)
    return options


def _webhooks(json_hooks: tuple[str, ...], slack_hooks: tuple[str, ...], collector: str | None,
              secret_env: str, token_env: str) -> list[relay.Webhook]:
    out = []
    try:
        for kind, specs in (("json", json_hooks), ("slack", slack_hooks)):
            for spec in specs:
                name, sep, url = spec.partition("=")
                if not sep:
                    raise click.BadParameter(f"{spec!r}: expected NAME=URL")
                out.append(relay.Webhook(name, kind, url,
                                         os.environ.get(secret_env) if kind == "json" else None))
        if collector:
            out.append(relay.Webhook("collector", "collector", collector,
                                     os.environ.get(token_env)))
    except ValueError as e:
        raise click.UsageError(f"{e} (secrets come from ${secret_env} / ${token_env})") from None
    if not out:
        raise click.UsageError("give at least one --webhook, --slack or --collector")
    return out


@click.group()
def notify() -> None:
    """Deliver approval requests, approvals and denials to webhooks.

    The database only queues events (an outbox, written in the transaction that made them);
    `notify run` delivers them, retrying with backoff while a receiver is down, and records
    each delivery per webhook. Run one per database (a second one waits for the first).

    \b
    run     deliver until stopped (SIGINT/SIGTERM)
    status  what was delivered, what waits, the last error, per webhook

    \b
    Exit status: 0 ok, 1 failure (status: some delivery is failing), 2 usage error.
    """


@notify.command()
@_hooks
@click.option("--poll", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              metavar="SECONDS", help="Check for retries this often (new events wake it up).")
def run(dsn: str, json_hooks: tuple[str, ...], slack_hooks: tuple[str, ...],
        collector: str | None, secret_env: str, token_env: str, poll: float) -> None:
    """Deliver events until stopped.

    \b
    Example:
      export PGWARDEN_WEBHOOK_SECRET=...   # the receiver checks X-Pgwarden-Signature with it
      pgwarden notify run --dsn "$DSN" --slack sec=https://hooks.slack.com/services/... \\
          --webhook soc=https://soc.example.com/pgwarden
    """
    hooks = _webhooks(json_hooks, slack_hooks, collector, secret_env, token_env)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per delivery is ours
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    r = relay.Relay(dsn, hooks, poll=poll)
    click.echo(f"delivering to {', '.join(h.spec for h in hooks)}", err=True)
    try:
        r.run(stop)
    finally:
        r.close()


@notify.command()
@_hooks
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def status(dsn: str, json_hooks: tuple[str, ...], slack_hooks: tuple[str, ...],
           collector: str | None, secret_env: str, token_env: str, as_json: bool) -> None:
    """Per webhook: delivered, pending, failing (pending after a failed attempt), the oldest
    pending event and the last error. Exit status 1 when a delivery is failing."""
    hooks = [f"{n.partition('=')[0]}:json" for n in json_hooks] + \
        [f"{n.partition('=')[0]}:slack" for n in slack_hooks] + \
        (["collector:collector"] if collector else [])
    if not hooks:
        raise click.UsageError("give the webhooks `notify run` serves")
    try:
        rows = relay.status(dsn, hooks)
    except (DbError, psycopg.OperationalError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        for r in rows:
            click.echo(f"{r['webhook']:<16} delivered {r['delivered']:>5}  pending "
                       f"{r['pending']:>5}  failing {r['failing']:>5}"
                       + (f"  oldest pending {r['oldest_pending']}" if r["pending"] else "")
                       + (f"  last error: {r['last_error']}" if r["last_error"] else ""))
    raise SystemExit(1 if any(r["failing"] for r in rows) else 0)

"""`pgwarden approvals`: review just-in-time approval requests (docs/approvals.md)."""

from __future__ import annotations

import json
from typing import Any

import click

from agent import approvals as api
from agent.db.conn import DbError

DSN = click.option("--dsn", envvar="PGWARDEN_DSN", required=True, metavar="DSN",
                   help="libpq connection string; the role connecting is the reviewer "
                        "(env PGWARDEN_DSN).")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group()
def approvals() -> None:
    """Just-in-time approvals: statements a policy rule sends for review (`approve` action).

    A refused statement fails with SQLSTATE PW002 and names its request ("approval request
    42"). Approving it is a one-time grant: the requester's next run of the same statement, by
    the same principal, touching the same rows, goes through once.

    \b
    list     requests (newest first)
    show     one request: who, what, where, the impact (rows, a sample of their keys), events
    approve  grant it (you are the reviewer: the role you connect as, and your OS user)
    deny     refuse it, with a reason

    \b
    Exit status: 0 ok, 1 failure or refusal (e.g. approving your own request), 2 usage error.
    """


def _fail(e: DbError) -> None:
    raise click.ClickException(str(e))


@approvals.command(name="list")
@DSN
@click.option("--status", type=click.Choice([*api.STATUSES, "all"]), default="pending",
              show_default=True, help="Which requests.")
@JSON
def list_(dsn: str, status: str, as_json: bool) -> None:
    """List requests: all of them for reviewers and pgwarden admins, your own otherwise."""
    try:
        rows = api.requests(dsn, None if status == "all" else status)
    except DbError as e:
        _fail(e)
        return
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no {'' if status == 'all' else status + ' '}approval requests")
        return
    for r in rows:
        rows_text = "?" if r["rows"] is None else str(r["rows"])
        click.echo(f"{r['id']:>6}  {r['status']:<8}  {r['created_at'][:19]}  "
                   f"{_who(r)}  {r['rule']}: {r['op']} {r['object']} ({rows_text} rows)  "
                   f"{_short(r['statement'], 60)}")


@approvals.command()
@DSN
@click.argument("request_id", type=int)
@JSON
def show(dsn: str, request_id: int, as_json: bool) -> None:
    """Show one request with its impact, review, grant, events and their deliveries."""
    try:
        r = api.show(dsn, request_id)
    except DbError as e:
        _fail(e)
        return
    click.echo(json.dumps(r, indent=2) if as_json else _details(r))


@approvals.command()
@DSN
@click.argument("request_id", type=int)
@click.option("--comment", default=None, help="A note kept with the approval.")
@JSON
def approve(dsn: str, request_id: int, comment: str | None, as_json: bool) -> None:
    """Approve a pending request: a one-time grant, valid for the policy's grant_ttl.

    \b
    Example:
      pgwarden approvals show 42 --dsn "$DSN"
      pgwarden approvals approve 42 --dsn "$DSN" --comment "ticket OPS-1234"
    """
    try:
        r = api.approve(dsn, request_id, comment)
    except DbError as e:
        _fail(e)
        return
    click.echo(json.dumps(r, indent=2) if as_json else
               f"approved request {r['id']}: one run of it by {r['requester']} until "
               f"{r['grant_expires_at']}")


@approvals.command()
@DSN
@click.argument("request_id", type=int)
@click.option("--reason", required=True, help="Why (kept with the request and in the ledger).")
@JSON
def deny(dsn: str, request_id: int, reason: str, as_json: bool) -> None:
    """Deny a pending request."""
    try:
        r = api.deny(dsn, request_id, reason)
    except DbError as e:
        _fail(e)
        return
    click.echo(json.dumps(r, indent=2) if as_json else f"denied request {r['id']}: {reason}")


def _who(r: dict[str, Any]) -> str:
    ident = r.get("identity") or "unattested"
    return f"{r['requester']} ({ident})"


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _details(r: dict[str, Any]) -> str:
    sample = r.get("key_sample")
    keys = ", ".join(json.dumps(k[0] if isinstance(k, list) and len(k) == 1 else k)
                     for k in sample) if sample else "-"
    more = "" if not sample or r["rows"] is None or r["rows"] <= len(sample) else ", …"
    lines = [
        f"request {r['id']}: {r['status']}",
        f"  who:        {_who(r)}, as role {r['requester_role']}, pid {r['pid']}, "
        f"application {r['application_name'] or '-'}, client {r['client_addr'] or 'local'}",
        f"  what:       {r['statement']}",
        f"  fingerprint {r['fingerprint']}",
        f"  where:      {r['op']} on {r['object_type']} {r['object']}",
        f"  rule:       {r['rule']}: {r['reason']}",
        f"  impact:     {'?' if r['rows'] is None else r['rows']} row(s); "
        f"keys ({', '.join(r['key_columns'] or []) or 'none'}): {keys}{more}",
        f"  effect:     {r['effect']}",
        f"  requested:  {r['created_at']}, reviewable until {r['expires_at']}",
    ]
    if r.get("reviewer"):
        lines.append(f"  reviewed:   {r['status']} by {r['reviewer']} (OS user "
                     f"{r['reviewer_os_user'] or '?'}) at {r['reviewed_at']}"
                     + (f": {r['comment']}" if r.get("comment") else ""))
    if r.get("grant_expires_at"):
        lines.append(f"  grant:      {r['uses_left']} use(s) left, until {r['grant_expires_at']}")
    if r.get("used_at"):
        lines.append(f"  used:       {r['used_at']} by pid {r['used_pid']}")
    for e in r.get("events", []):
        deliveries = "; ".join(
            f"{d['webhook']}: " + ("delivered" if d["delivered_at"] else
                                   f"{d['attempts']} failed attempt(s), last error "
                                   f"{d['last_error'] or '?'}")
            for d in e["deliveries"]) or "not delivered yet"
        lines.append(f"  event {e['id']}: {e['event']} at {e['at']} ({deliveries})")
    return "\n".join(lines)

"""`pgwarden identity`: the current backends of a database with the identity the host agent
attested for each, and whether masking views give them masked values (docs/identity.md)."""

from __future__ import annotations

import json
from typing import Any

import click
import psycopg

from agent.db.conn import DbError, connect, server_error

_COLUMNS = ("pid", "user", "database", "application_name", "backend_start", "client_addr",
            "attested", "identity", "client", "attested_at", "masked", "mask_mode")


def backends(dsn: str, all_databases: bool = False) -> list[dict[str, Any]]:
    """Rows of pgwarden.identities(): one per client backend (DbError on failure)."""
    with connect(dsn) as conn:
        try:
            rows = conn.execute("SELECT pid, usename, datname, application_name, backend_start,"
                                " client_addr, attested, identity, client, attested_at, masked,"
                                " mask_mode FROM pgwarden.identities(%s)",
                                [all_databases]).fetchall()
        except psycopg.Error as e:
            raise DbError(f"reading attested identities: {server_error(e)}") from None
    out = []
    for r in rows:
        row = dict(zip(_COLUMNS, r))
        for key in ("backend_start", "attested_at"):
            row[key] = row[key].isoformat() if row[key] is not None else None
        out.append(row)
    return out


def _who(row: dict[str, Any]) -> str:
    c = row["client"] or {}
    parts = [f"exe {c['exe']}" if c.get("exe") else "", f"pid {c['pid']}" if c.get("pid") else "",
             f"unit {c['systemd_unit']}" if c.get("systemd_unit") else "",
             f"container {c['container_id'][:12]}" if c.get("container_id") else ""]
    return ", ".join(p for p in parts if p)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", envvar="PGWARDEN_DSN", required=True, metavar="DSN",
              help="libpq connection string of a pgwarden admin (member of pgwarden_admin or "
                   "superuser) (env PGWARDEN_DSN).")
@click.option("--all-databases", is_flag=True,
              help="Also list backends of other databases (their attestations live there: "
                   "shown as '-').")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per backend.")
def identity(dsn: str, all_databases: bool, as_json: bool) -> None:
    """Current backends with the identity the host agent attested for each.

    \b
    Columns: backend pid, user@database, application_name (as the client claims it: never
    trusted), the attested identity (the service name the agent mapped, else unit:, container:
    or exe: of the client; "unattested" when the agent has not registered the backend), the
    client process, and masked: yes / no as masking views decide for that session ("role":
    masked in every session; "identity": a shared role, the identity decides; blank: the role
    is not governed by masking).

    \b
    Exit status: 0 ok, 1 database error (pgwarden not installed, not an admin).

    \b
    Example:
      pgwarden identity --dsn 'host=/var/run/postgresql dbname=app user=postgres'
    """
    try:
        rows = backends(dsn, all_databases)
    except DbError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no client backends")
        return
    table = [("PID", "USER@DATABASE", "APPLICATION", "IDENTITY", "MASKED", "CLIENT")]
    for r in rows:
        # another database's attestations live in that database; an attested row without an
        # identity is a client the agent could not attribute: policies see "unattested"
        ident = "-" if r["masked"] is None else r["identity"] or "unattested"
        masked = "-" if r["masked"] is None else (
            ("yes" if r["masked"] else "no") + (f" ({r['mask_mode']})" if r["mask_mode"] else ""))
        table.append((str(r["pid"]), f"{r['user']}@{r['database']}",
                      r["application_name"] or "", ident, masked, _who(r)))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    attested = sum(1 for r in rows if r["attested"])
    click.echo(f"{len(rows)} backends, {attested} attested, "
               f"{sum(1 for r in rows if r['masked'])} masked")

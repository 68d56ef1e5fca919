"""`pgwarden db`: install, inspect and remove the pgwarden extension (on the database host)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from agent.db import install as installer
from agent.db.conn import DbError

DSN = click.option("--dsn", envvar="PGWARDEN_DSN", required=True, metavar="DSN",
                   help="libpq connection string of a superuser, e.g. "
                        "'host=/var/run/postgresql dbname=app user=postgres' "
                        "(env PGWARDEN_DSN).")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _out(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


@click.group()
def db() -> None:
    """Install, check and remove the pgwarden extension.

    The extension enforces guardrails inside PostgreSQL and keeps the hash-chained ledger.
    These commands copy files into the server's directories, so they run as root on the
    database host, and connect as a PostgreSQL superuser.

    \b
    Exit status: 0 ok, 1 failure (the message says what and how to fix it), 2 usage error.
    """


@db.command()
@DSN
@click.option("--python-root", type=click.Path(path_type=Path),
              default=installer.DEFAULT_PYTHON_ROOT, show_default=True,
              help="Where the server-side Python package and sqlglot go "
                   "(<root>/<version>/python).")
@JSON
def install(dsn: str, python_root: Path, as_json: bool) -> None:
    """Install or upgrade pgwarden in the database of DSN.

    \b
    Steps (idempotent):
      1. copy pgwarden_ext and sqlglot (pinned) where the server's Python finds them;
      2. copy pgwarden.control and pgwarden--*.sql into $(pg_config --sharedir)/extension;
      3. create role pgwarden_admin, extensions plpython3u and dblink (schema
         pgwarden_dblink), then CREATE EXTENSION pgwarden (or ALTER EXTENSION ... UPDATE);
      4. check that records of blocked statements can be written autonomously (dblink back
         over the unix socket) by writing the "installed" ledger record.

    \b
    Example:
      sudo pgwarden db install --dsn 'host=/var/run/postgresql dbname=app user=postgres'
    """
    try:
        r = installer.install(dsn, python_root)
    except (installer.InstallError, DbError) as e:
        raise click.ClickException(str(e)) from None
    _out(r, as_json, f"pgwarden {r['version']} installed in database {r['database']}\n"
                     f"  extension files: {r['extension_dir']}\n"
                     f"  server Python:   {r['server_python']}, sqlglot {r['sqlglot']} from "
                     f"{r['python_dir']}")


@db.command()
@DSN
@click.option("--remove-files", is_flag=True,
              help="Also delete the control file, SQL scripts and server-side Python files.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@JSON
def uninstall(dsn: str, remove_files: bool, yes: bool, as_json: bool) -> None:
    """Remove pgwarden from the database of DSN.

    Drops every guard trigger, then the extension with its policy history and ledger (the final
    ledger head is printed so it can be anchored), and dblink if pgwarden installed it. The
    role pgwarden_admin is cluster-wide and is kept.
    """
    if not yes:
        click.confirm("This drops pgwarden's ledger and policy history. Continue?", abort=True)
    try:
        r = installer.uninstall(dsn, remove_files)
    except (installer.InstallError, DbError) as e:
        raise click.ClickException(str(e)) from None
    head = r["final_head"]
    text = "pgwarden was not installed" if not r["was_installed"] else \
        f"pgwarden removed; final ledger head: {head['seq']} {head['hash']}"
    _out(r, as_json, text + "".join(f"\n  removed {f}" for f in r["removed_files"]))


@db.command()
@DSN
@JSON
def status(dsn: str, as_json: bool) -> None:
    """Show the installed version, the server's Python and sqlglot, the policy in force, the
    ledger head and the event triggers. Exit status 1 when pgwarden is not installed."""
    try:
        r = installer.status(dsn)
    except DbError as e:
        raise click.ClickException(str(e)) from None
    if not r["installed"]:
        _out(r, as_json, f"pgwarden is not installed (available: {r['available']})")
        raise SystemExit(1)
    py, pol, led = r["python"], r["policy"], r["ledger"]
    lines = [f"pgwarden {r['version']} (available {r['available']})",
             f"  server Python {py['python']}, sqlglot {py['sqlglot']} ({py['sqlglot_path']})",
             f"  policy: version {pol['version']}" + (
                 f", sha256 {pol['sha256'][:12]}, git {pol['git_commit'] or '-'}, applied "
                 f"{pol['applied_at']} by {pol['applied_by']}" if pol["version"] else " (none)"),
             f"  ledger: {led['seq']} records, head {led['hash']}, {led['pending']} pending",
             "  event triggers: " + ", ".join(f"{k} ({v})" for k, v in
                                              r["event_triggers"].items())]
    _out(r, as_json, "\n".join(lines))

"""`pgwarden policy`: validate, plan, apply and drift-check pgwarden.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from agent.db.conn import DbError
from agent.policy import client
from agent.policy.schema import Policy, PolicyFileError, load

DSN = click.option("--dsn", envvar="PGWARDEN_DSN", required=True, metavar="DSN",
                   help="libpq connection string of a pgwarden admin (member of pgwarden_admin "
                        "or superuser) (env PGWARDEN_DSN).")
FILE = click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path),
                    default=Path("pgwarden.yaml"), show_default=True,
                    help="The policy file.")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _load(path: Path, as_json: bool) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise click.ClickException(f"cannot read {path}: {e.strerror}") from None
    try:
        return load(text, str(path))
    except PolicyFileError as e:
        if as_json:
            click.echo(json.dumps({"valid": False, "file": str(path), "problems": [
                {"line": p.line, "column": p.col, "path": p.path, "message": p.message}
                for p in e.problems]}, indent=2))
        else:
            for p in e.problems:
                click.echo(f"{path}:{p}", err=True)
            click.echo(f"{path}: invalid ({len(e.problems)} problem(s)); nothing was changed",
                       err=True)
        raise SystemExit(1) from None


def _changes_text(changes: list[dict[str, str]]) -> str:
    if not changes:
        return "no changes"
    width = max(len(c["kind"]) for c in changes)
    return "\n".join(f"{c['change']} {c['kind']:<{width}}  {c['object']}  {c['detail']}"
                     for c in changes)


@click.group()
def policy() -> None:
    """Policy-as-code: pgwarden.yaml -> guardrails enforced inside PostgreSQL.

    \b
    validate  check the file (no database): errors name line and column
    plan      show the exact changes apply would make
    apply     enforce the file atomically; recorded in the ledger with its hash and git commit
    drift     report anything that weakens enforcement

    The file format is documented in docs/policy.md.

    \b
    Exit status: 0 ok (drift: nothing found), 1 invalid file, findings or failure,
    2 usage error.
    """


@policy.command()
@FILE
@JSON
def validate(path: Path, as_json: bool) -> None:
    """Check the policy file without touching a database.

    \b
    Example:
      pgwarden policy validate --file pgwarden.yaml
      pgwarden.yaml:7:9: protect[0].rules.require_where: expected one of block, allow, off
    """
    pol = _load(path, as_json)
    out = {"valid": True, "file": str(path), "sha256": pol.sha256,
           "protect": [p["name"] for p in pol.doc["protect"]],
           "principals": [p["name"] for p in pol.doc["principals"]]}
    click.echo(json.dumps(out, indent=2) if as_json else
               f"{path}: valid (sha256 {pol.sha256[:12]}, {len(out['protect'])} protect "
               f"entries, {len(out['principals'])} principals)")


@policy.command()
@DSN
@FILE
@JSON
def plan(dsn: str, path: Path, as_json: bool) -> None:
    """Show the exact changes `apply` would make; change nothing.

    Lines read "<+|-|~> <kind> <object> <detail>": policy keys that change (old -> new), objects
    that become guarded or unguarded, protected columns, and guard triggers to create or repair.
    """
    pol = _load(path, as_json)
    try:
        changes = client.plan(dsn, pol)
    except DbError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({"changes": changes}, indent=2) if as_json else _changes_text(changes))


@policy.command()
@DSN
@FILE
@JSON
def apply(dsn: str, path: Path, as_json: bool) -> None:
    """Enforce the policy file, atomically (all or nothing).

    The applied file is stored with its SHA-256 and the git commit it came from (when the file
    is in a git checkout; "-dirty" when it differs from that commit), and a policy_applied
    record goes into the ledger.
    """
    pol = _load(path, as_json)
    commit = client.git_commit(path)
    try:
        r = client.apply(dsn, pol, commit)
    except DbError as e:
        raise click.ClickException(str(e)) from None
    out: dict[str, Any] = {**r, "sha256": pol.sha256, "git_commit": commit}
    click.echo(json.dumps(out, indent=2) if as_json else
               _changes_text(r["changes"]) + f"\napplied: policy version {r['version']} "
               f"(sha256 {pol.sha256[:12]}, git {commit or '-'})")


@policy.command()
@DSN
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also report whether this file differs from the policy in force.")
@JSON
def drift(dsn: str, path: Path | None, as_json: bool) -> None:
    """Report anything that weakens enforcement; exit status 1 if anything is found.

    \b
    Checked: guard triggers and event triggers missing or not ENABLE ALWAYS; objects the policy
    covers that are not guarded; members of pg_read_all_data / pg_write_all_data; GRANT SET ON
    PARAMETER (e.g. session_replication_role) and such role settings; TRUNCATE or TRIGGER
    granted on guarded tables; grants on pgwarden's own objects; rewrite rules involving
    guarded tables; with --file, whether the file is the policy in force.
    """
    pol = _load(path, as_json) if path else None
    try:
        found = client.drift(dsn, pol)
    except DbError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps({"findings": found}, indent=2))
    elif not found:
        click.echo("no drift")
    else:
        for f in found:
            click.echo(f"{f['severity']:<6} {f['kind']:<18} {f['object']}: {f['detail']}")
    raise SystemExit(1 if found else 0)

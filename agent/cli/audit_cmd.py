"""`pgwarden audit`: the hash-chained ledger of pgwarden's decisions."""

from __future__ import annotations

import json
import time

import click

from agent import audit as ledger
from agent.db.conn import DbError

DSN = click.option("--dsn", envvar="PGWARDEN_DSN", required=True, metavar="DSN",
                   help="libpq connection string of a pgwarden admin (env PGWARDEN_DSN).")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group()
def audit() -> None:
    """The ledger: every pgwarden decision, hash-chained (SHA-256, each record commits to the
    previous one).

    \b
    verify  recompute the chain end to end; name the first bad record
    head    print the head (seq and hash) to anchor it outside the database
    list    print records
    chain   move staged records into the chain (the chainer; run it periodically)

    \b
    Exit status: 0 ok, 1 tampering found or failure, 2 usage error.
    """


@audit.command()
@DSN
@click.option("--expect-head", metavar="[SEQ:]HASH",
              help="A head printed earlier by `pgwarden audit head` and kept elsewhere: fail if "
                   "it is no longer part of the chain (detects a truncated tail or a rewrite).")
@JSON
def verify(dsn: str, expect_head: str | None, as_json: bool) -> None:
    """Verify the whole chain; exit status 1 and the first bad record when tampered with.

    Detects edited, deleted, inserted and reordered records and a head that no longer matches
    the chain; with --expect-head, also records cut off the end. The hashes are recomputed here,
    independently of the extension's own functions.

    \b
    Example:
      pgwarden audit head --dsn "$DSN" > anchor.txt        # keep it elsewhere
      pgwarden audit verify --dsn "$DSN" --expect-head "$(cut -d' ' -f1,2 --output-delimiter=: anchor.txt)"
    """
    try:
        v = ledger.verify(dsn, expect_head)
    except DbError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(v.as_dict(), indent=2))
    elif v.ok:
        click.echo(f"ok: {v.records} records, head {v.head_seq} {v.head_hash}"
                   + (f" (anchor found at record {v.anchor['found_at']})" if v.anchor else ""))
    else:
        click.echo(f"TAMPERED: record {v.bad_seq}: {v.problem}", err=True)
    raise SystemExit(0 if v.ok else 1)


@audit.command()
@DSN
@JSON
def head(dsn: str, as_json: bool) -> None:
    """Print the ledger head as "SEQ HASH" (after chaining pending records)."""
    try:
        h = ledger.head(dsn)
    except DbError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(h) if as_json else f"{h['seq']} {h['hash']}")


@audit.command(name="list")
@DSN
@click.option("--since", type=int, default=0, show_default=True, help="Only records after SEQ.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N records.")
@JSON
def list_(dsn: str, since: int, limit: int | None, as_json: bool) -> None:
    """Print ledger records, oldest first (one JSON record per line with --json)."""
    try:
        rows = ledger.records(dsn, since, limit)
    except DbError as e:
        raise click.ClickException(str(e)) from None
    for r in rows:
        rec = r["record"]
        if as_json:
            click.echo(json.dumps({"seq": r["seq"], "hash": r["hash"], **rec}))
        else:
            what = " ".join(str(rec[k]) for k in ("rule", "op", "object") if rec.get(k))
            click.echo(f"{r['seq']:>6} {rec.get('ts', '')[:19]} {rec['kind']:<18} "
                       f"{rec.get('session_user', '')}: {what}")


@audit.command(name="chain")
@DSN
@click.option("--every", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Keep running, chaining every SECONDS (stop with Ctrl-C).")
def chain_(dsn: str, every: float | None) -> None:
    """Move staged records into the hash chain (a single chainer runs at a time; a concurrent
    run chains nothing and returns at once)."""
    try:
        while True:
            n = ledger.chain(dsn)
            if every is None:
                click.echo(f"chained {n} record(s)")
                return
            time.sleep(every)
    except DbError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        return

"""`pgwarden collector run`: the thin CLI over agent.collector (storage, api, server)."""

from __future__ import annotations

import logging
import sys

import click

from agent import config as config_mod
from agent.collector.errors import StoreError

DEFAULT_LISTEN = "127.0.0.1:7400"
DEFAULT_STORE = "/var/lib/pgwarden/collector.db"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def collector() -> None:
    """The collector: receives the agents' event batches and stores them for queries."""


@collector.command("run")
@click.option("--listen", metavar="HOST:PORT",
              help=f"Address to serve HTTP on. Port 0 picks a free port (printed at start). "
                   f"Default: [collector] listen, else {DEFAULT_LISTEN}.")
@click.option("--store", metavar="PATH|URL",
              help="Where to store events: a SQLite file path (created with its directory if "
                   "missing) or a postgresql://user:password@host:port/dbname URL (the database "
                   f"must exist). Default: [collector] store, else {DEFAULT_STORE}.")
@click.option("--token", envvar="PGWARDEN_TOKEN", show_envvar=True, metavar="TOKEN",
              help="Bearer token agents must send. Falls back to $PGWARDEN_TOKEN, then "
                   "[collector] token. Prefer those: a command-line token shows up in `ps`.")
@click.option("--config", "config_path", metavar="PATH",
              help="Configuration file (TOML). Default: $PGWARDEN_CONFIG, else "
                   "/etc/pgwarden/config.toml when it exists.")
def run(listen: str | None, store: str | None, token: str | None,
        config_path: str | None) -> None:
    """Receive event batches from pgwarden agents over HTTP and store them.

    \b
    Agents POST MessagePack batches to /v1/ingest with "Authorization: Bearer TOKEN"
    (the format is docs/events.md, schema version 1). Each batch is validated completely
    and stored in one transaction: all of it or nothing. A batch already stored (same
    agent_id and batch_seq, e.g. replayed after a lost response) is acknowledged and not
    stored twice. GET /v1/health answers without a token.

    \b
    The store is created and migrated to the current schema at start; a store written by
    a newer pgwarden is refused. SQLite runs in WAL mode, so `pgwarden statements` can
    read it while the collector writes.

    \b
    On start one line is printed to stdout: the listening URL, the store kind and
    location (without password) and the schema version. Every refused request is logged
    to stderr with the client address, the HTTP status and the reason:
      400 body is not a MessagePack map    413 body over 16 MiB
      401 missing or wrong token           422 violates the event schema
      503 store unavailable (agents keep the batch and retry)
    SIGINT or SIGTERM stop it cleanly: requests in flight finish, then it exits 0.

    \b
    Exit status: 0 after a clean stop; 1 when the store cannot be opened or the address
    cannot be bound; 2 for usage errors, including a missing token.

    \b
    Examples:
      PGWARDEN_TOKEN=s3cret pgwarden collector run --store /var/lib/pgwarden/collector.db
      pgwarden collector run --listen 0.0.0.0:7400 \\
          --store postgresql://pgwarden@db.internal/pgwarden --token "$(cat /etc/pgwarden/token)"
    """
    from agent.collector import api, server
    from agent.collector.storage import open_store

    try:
        cfg = config_mod.load(config_path)
        listen = listen or cfg.get("collector", "listen", DEFAULT_LISTEN)
        store_location = store or cfg.get("collector", "store", DEFAULT_STORE)
        token = token or cfg.get("collector", "token")
    except config_mod.ConfigError as e:
        raise click.UsageError(str(e)) from None
    if not token:
        raise click.UsageError("no ingest token: pass --token, set $PGWARDEN_TOKEN, or set "
                               "token in the [collector] section of the configuration file")
    try:
        host, port = server.parse_listen(str(listen))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--listen") from None

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s pgwarden collector: %(message)s")
    log = logging.getLogger("pgwarden.collector")
    log.setLevel(logging.INFO)

    try:
        opened = open_store(str(store_location), create=True, migrate=True)
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    try:
        try:
            sock = server.bind(host, port)
        except OSError as e:
            raise click.ClickException(f"cannot listen on {listen}: {e.strerror or e}") from None
        app = api.create_app(opened, str(token), logger=log)
        click.echo(f"pgwarden collector listening on {server.bound_url(sock)}, "
                   f"store {opened.kind} {opened.location}, schema version {opened.schema_version}")
        sys.stdout.flush()
        server.serve(app, sock)
        log.info("stopped")
    finally:
        opened.close()

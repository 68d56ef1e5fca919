"""`pgwarden sessions`, `pgwarden session ID`, `pgwarden statements`: thin CLI over query.py.

Exit status of all three: 0 on success (also when nothing matches), 1 when the store is missing
or unreachable, 2 for usage errors (bad option values, an invalid configuration file).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from agent import config as config_mod
from agent.collector.errors import StoreError
from agent.collector.relations import Relation, parse_relation
from agent.collector.times import parse_time

DEFAULT_STORE = "/var/lib/pgwarden/collector.db"
DEFAULT_TABLE_LIMIT = 50
F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"]}


class TimeType(click.ParamType):  # type: ignore[type-arg]
    """ISO 8601 time (local when no offset) or a duration back from now: 30s, 15m, 2h, 1d, 1w."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class RelationType(click.ParamType):  # type: ignore[type-arg]
    """A relation name, optionally schema-qualified and "quoted": orders, public.orders."""

    name = "TABLE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Relation:
        if isinstance(value, Relation):
            return value
        try:
            return parse_relation(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


def _sqlstate(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (len(value) not in (2, 5) or not value.isalnum()):
        raise click.BadParameter("a SQLSTATE has 5 characters (23505, PW001) or names a class "
                                 "with 2 (23)")
    return value


# -- option bundles ------------------------------------------------------------------------------

def store_options(fn: F) -> F:
    """--store and --config."""
    fn = click.option("--config", "config_path", metavar="PATH",
                      help="Configuration file (TOML). Default: $PGWARDEN_CONFIG, else "
                           "/etc/pgwarden/config.toml when it exists.")(fn)
    return click.option("--store", metavar="PATH|URL",
                        help="The collector's store: a SQLite file or a postgresql:// URL. "
                             "Default: [query] store, else [collector] store of the "
                             f"configuration file, else {DEFAULT_STORE}.")(fn)


def output_options(fn: F) -> F:
    """--json and --limit."""
    fn = click.option("--limit", type=click.IntRange(min=0), metavar="N",
                      help="Show the latest N matching rows (still oldest first); 0 = all. "
                           f"Default: {DEFAULT_TABLE_LIMIT} for tables, all with --json.")(fn)
    return click.option("--json", "as_json", is_flag=True,
                        help="One JSON object per line, every stored field, times in UTC "
                             "(started_at: ISO 8601 with microseconds).")(fn)


def session_filter_options(fn: F) -> F:
    """--user, --database, --client-exe, --since, --until."""
    for decorator in reversed((
        click.option("--user", metavar="NAME", help="Database user (exact)."),
        click.option("--database", metavar="NAME", help="Database name (exact)."),
        click.option("--client-exe", metavar="TEXT",
                     help="Client executable path contains TEXT (case-insensitive)."),
        click.option("--since", type=TimeType(),
                     help="From this time on: ISO 8601 (2024-05-01T09:00, local unless it has "
                          "an offset or Z) or back from now (30s, 15m, 2h, 1d, 1w)."),
        click.option("--until", type=TimeType(), help="Before this time (same forms)."),
    )):
        fn = decorator(fn)
    return fn


# -- shared plumbing -----------------------------------------------------------------------------

@contextmanager
def _opened_store(store: str | None, config_path: str | None) -> Iterator[Any]:
    """Open the store read-only-minded (no migrations); errors become exit 1 (store) or 2."""
    from agent.collector.storage import open_store

    try:
        cfg = config_mod.load(config_path)
        location = store or cfg.get("query", "store") or cfg.get("collector", "store")
    except config_mod.ConfigError as e:
        raise click.UsageError(str(e)) from None
    try:
        opened = open_store(str(location or DEFAULT_STORE), create=False, migrate=False)
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    try:
        yield opened
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    finally:
        opened.close()


def _effective_limit(limit: int | None, as_json: bool) -> int | None:
    if limit == 0 or (limit is None and as_json):
        return None
    return DEFAULT_TABLE_LIMIT if limit is None else limit


def _emit_json(rows: Iterator[dict[str, Any]]) -> None:
    for row in rows:
        click.echo(json.dumps(row, ensure_ascii=False, default=str))


def _list(store: str | None, config_path: str | None, limit: int | None, as_json: bool,
          flt: Any, find: Callable[..., Iterator[dict[str, Any]]], count: Callable[..., int],
          show: Callable[[Any, list[dict[str, Any]], int], None]) -> None:
    """Rows matching `flt`: JSON lines (all unless --limit) or a table with the hidden count."""
    effective = _effective_limit(limit, as_json)
    with _opened_store(store, config_path) as opened:
        rows = find(opened, flt, limit=effective)
        if as_json:
            _emit_json(rows)
            return
        shown = list(rows)
        hidden = 0
        if effective is not None and len(shown) == effective:
            hidden = count(opened, flt) - len(shown)
        show(_console(), shown, hidden)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


# -- commands ------------------------------------------------------------------------------------

@click.command(context_settings=CONTEXT)
@session_filter_options
@output_options
@store_options
def sessions(user: str | None, database: str | None, client_exe: str | None, since: int | None,
             until: int | None, limit: int | None, as_json: bool, store: str | None,
             config_path: str | None) -> None:
    """List captured sessions (connections), oldest first.

    A session is one PostgreSQL backend: who connected (user, database, application_name),
    from which client process and service (as attested by the agent), when, and how it
    ended. --since/--until apply to the session's start.

    Exit status: 0 on success, also when nothing matches; 1 when the store is missing
    or unreachable; 2 for usage errors.

    \b
    Examples:
      pgwarden sessions --since 1h
      pgwarden sessions --user app --client-exe python --json
    """
    from agent.collector import query, render

    flt = query.SessionFilter(user=user, database=database, client_exe=client_exe,
                              since_us=since, until_us=until)
    _list(store, config_path, limit, as_json, flt,
          query.find_sessions, query.count_sessions, render.print_sessions)


@click.command(context_settings=CONTEXT)
@click.argument("session_id", metavar="ID")
@output_options
@store_options
def session(session_id: str, limit: int | None, as_json: bool, store: str | None,
            config_path: str | None) -> None:
    """Show one session: who, from where, and its timeline.

    ID is a session id as `pgwarden sessions` prints it, or an unambiguous prefix of one.
    The timeline lists, in time order: the session start, every statement (with its
    result, duration and flags), capture gaps, cancel requests aimed at the session's
    backend, and the session end. --limit keeps the latest N entries.

    With --json, the first line is the session ({"kind": "session", ...}) and each further
    line one timeline entry ({"kind": "statement" | "gap" | "cancel" | "session.started" |
    "session.ended", ...}). An unknown ID prints a message on stderr and exits 0.

    Exit status: 0 on success, also when nothing matches; 1 when the store is missing
    or unreachable; 2 for usage errors.

    \b
    Example:
      pgwarden session 3f2a9c41
    """
    from agent.collector import query, render

    effective = _effective_limit(limit, as_json)
    with _opened_store(store, config_path) as opened:
        try:
            full_id = query.resolve_session_id(opened, session_id)
        except query.SessionNotFound as e:
            click.echo(f"{e} ({opened})", err=True)
            return
        except query.AmbiguousSession as e:
            raise click.UsageError(
                f"{e}: {', '.join(e.candidates)}; give more characters") from None
        timeline = query.session_timeline(opened, full_id)
        kept: deque[dict[str, Any]] = deque(maxlen=effective)
        total = 0
        for entry in timeline.entries:
            total += 1
            kept.append(entry)
        if as_json:
            _emit_json(iter([{"kind": "session", **timeline.session}, *kept]))
            return
        render.print_session(_console(), timeline.session, kept, total - len(kept))


@click.command(context_settings=CONTEXT)
@session_filter_options
@click.option("--table", type=RelationType(), metavar="NAME",
              help="Statements referencing this relation (table, view), found at ingest by "
                   "parsing the statement. `orders` matches any schema; `public.orders` "
                   "matches public.orders and unqualified orders.")
@click.option("--error", is_flag=True, help="Only statements that failed (have a SQLSTATE).")
@click.option("--sqlstate", metavar="CODE", callback=_sqlstate,
              help="Only statements that failed with this SQLSTATE (23505) or class (23).")
@click.option("--sql-like", metavar="PATTERN",
              help="Statement text matches this SQL LIKE pattern, case-insensitive: "
                   "% any text, _ one character, \\ escapes. Text is normalized "
                   "(constants are $1, $2, ...).")
@click.option("--session", "session_id", metavar="ID", help="Only this session (full id).")
@click.option("--blocked", is_flag=True,
              help="Only statements a pgwarden guardrail refused (flag blocked, SQLSTATE PW001).")
@click.option("--masked", is_flag=True,
              help="Only statements of sessions pgwarden masked that reference a table with "
                   "masked columns; each lists those columns (masked_columns).")
@output_options
@store_options
def statements(user: str | None, database: str | None, client_exe: str | None,
               since: int | None, until: int | None, table: Relation | None, error: bool,
               sqlstate: str | None, sql_like: str | None, session_id: str | None,
               blocked: bool, masked: bool, limit: int | None, as_json: bool,
               store: str | None, config_path: str | None) -> None:
    """List captured statements, oldest first, with their session and client.

    Filters combine with AND. Without --limit a table shows the latest 50 matches and
    says how many more there are; --json prints every match, one object per line, with
    session_id, backend_pid, user, database, application_name, client_addr, client_port,
    client_pid, client_exe, protocol, statement, fingerprint, command_tag, rows, sqlstate,
    started_at (UTC, microseconds), duration_us, tables, masked_columns, flags and every other
    stored field.
    --since/--until apply to the time the backend read the statement.

    Exit status: 0 on success, also when nothing matches; 1 when the store is missing
    or unreachable; 2 for usage errors.

    \b
    Examples:
      pgwarden statements --since 15m --user app
      pgwarden statements --table public.customers --since 2024-05-01 --json
      pgwarden statements --error --sqlstate 42501
      pgwarden statements --sql-like 'delete from %' --client-exe python
      pgwarden statements --blocked --since 1d
      pgwarden statements --masked --since 1d   # who read masked columns, which ones
    """
    from agent.collector import query, render

    flt = query.StatementFilter(
        user=user, database=database, client_exe=client_exe, since_us=since, until_us=until,
        table=table, error=error, sqlstate=sqlstate, sql_like=sql_like, session_id=session_id,
        blocked=blocked, masked=masked)
    _list(store, config_path, limit, as_json, flt,
          query.find_statements, query.count_statements, render.print_statements)

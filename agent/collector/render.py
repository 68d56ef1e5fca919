"""Rich tables for the query commands (the `--json` output needs none of this).

Tables fit the terminal (rich wraps long cells), show local times in ISO 8601 with their
offset, and end with a footer when `--limit` hid older rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent.collector.times import iso_local

_STATEMENT_CHARS = 400  # in tables only; --json has the full text


def duration(us: int | None) -> str:
    """`850 µs`, `12.3 ms`, `4.20 s`, `3 min 5 s`; "" for None."""
    if us is None:
        return ""
    if us < 1000:
        return f"{us} µs"
    if us < 1_000_000:
        return f"{us / 1000:.3g} ms"
    if us < 60_000_000:
        return f"{us / 1_000_000:.3g} s"
    minutes, seconds = divmod(us // 1_000_000, 60)
    return f"{minutes} min {seconds} s"


def client(row: dict[str, Any]) -> str:
    """`psql[4242]`, from the client executable (basename) or comm, and pid; "" when unknown."""
    name = os.path.basename(row.get("client_exe") or "") or row.get("client_comm") or ""
    pid = row.get("client_pid")
    if pid is not None:
        return f"{name}[{pid}]" if name else f"pid {pid}"
    return name


def result(row: dict[str, Any]) -> Text:
    """`SELECT 5`, or the SQLSTATE (red) and rule; flags after it."""
    if row.get("sqlstate"):
        text = Text(row["sqlstate"], style="bold red")
        if row.get("rule"):
            text.append(f" {row['rule']}", style="red")
    else:
        tag = row.get("command_tag") or ""
        rows = row.get("rows")
        text = Text(f"{tag} {rows}" if rows is not None and tag else tag)
    flags = row.get("flags") or []
    if flags:
        text.append(" " + ",".join(flags), style="yellow")
    return text


def statement_text(text: str | None) -> Text:
    """The statement for a table cell: whitespace collapsed, cut at 400 characters."""
    if text is None:
        return Text("(unknown)", style="dim")
    flat = " ".join(text.split())
    return Text(flat if len(flat) <= _STATEMENT_CHARS else flat[:_STATEMENT_CHARS] + "…")


class _LocalTimes:
    """Local ISO 8601 times for one table: the offset goes in the column header, and into a
    cell only when it differs from the header's (a DST change inside the table)."""

    def __init__(self, first_us: int | None) -> None:
        self.offset = _offset(first_us if first_us is not None else 0)

    def header(self, label: str) -> str:
        return f"{label} (UTC{self.offset})"

    def cell(self, us: int | None) -> str:
        if us is None:
            return ""
        text = iso_local(us)
        return text[:-6] if text.endswith(self.offset) else text


def _offset(us: int) -> str:
    return iso_local(us)[-6:]


def _who(row: dict[str, Any]) -> Text:
    text = Text(f"{row.get('user') or '?'}@{row.get('database') or '?'}")
    who = client(row)
    if who:
        text.append(f"\n{who}", style="cyan")
    return text


def print_statements(console: Console, rows: Iterable[dict[str, Any]], hidden: int) -> int:
    """Print a statements table; return how many rows it showed."""
    rows = list(rows)
    times = _LocalTimes(rows[0]["ts_us"] if rows else None)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(times.header("time"), no_wrap=True)
    table.add_column("session", no_wrap=True)
    table.add_column("user@db / client", max_width=28)
    table.add_column("statement", ratio=1, min_width=16)
    table.add_column("result / duration", max_width=24)
    for row in rows:
        outcome = result(row)
        if row["duration_us"] is not None:
            outcome.append(f"\n{duration(row['duration_us'])}", style="dim")
        text = statement_text(row["statement"])
        if row.get("masked_columns"):
            text.append("\nmasked: " + ", ".join(row["masked_columns"]), style="magenta")
        table.add_row(times.cell(row["ts_us"]), row["session_id"][:8], _who(row), text, outcome)
    _print(console, table, len(rows), hidden, "statements")
    return len(rows)


def print_sessions(console: Console, rows: Iterable[dict[str, Any]], hidden: int) -> int:
    """Print a sessions table; return how many rows it showed."""
    rows = list(rows)
    times = _LocalTimes(_start(rows[0]) if rows else None)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(times.header("started"), no_wrap=True)
    table.add_column("session", no_wrap=True)
    table.add_column("user@db / client", max_width=28)
    table.add_column("application / from", max_width=28)
    table.add_column("stmts", justify="right")
    table.add_column("ended", max_width=24)
    for row in rows:
        ended = (Text(f"{row['end_reason'] or 'ended'} after {duration(row['duration_us'])}")
                 if row["ended_us"] is not None else Text("open", style="green"))
        where = Text(row.get("application_name") or "")
        origin = _origin(row)
        if origin:
            where.append(f"\n{origin}", style="dim")
        table.add_row(times.cell(_start(row)), row["session_id"], _who(row), where,
                      str(row["statements_stored"]), ended)
    _print(console, table, len(rows), hidden, "sessions")
    return len(rows)


def _start(row: dict[str, Any]) -> int:
    return int(row["started_us"] if row["started_us"] is not None else row["first_seen_us"])


def print_session(console: Console, session: dict[str, Any],
                  entries: Iterable[dict[str, Any]], hidden: int) -> int:
    """Print a session's header and its timeline; return how many entries it showed."""
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    start = _start(session)
    for label, value in (
        ("session", session["session_id"]),
        ("user@database", f"{session.get('user') or '?'}@{session.get('database') or '?'}"),
        ("application", session.get("application_name") or ""),
        ("client", " ".join(filter(None, [client(session), session.get("client_cmdline")]))),
        ("client user", _uid(session)),
        ("service", session.get("client_systemd_unit") or session.get("client_container_id")
         or session.get("client_cgroup") or ""),
        ("from", _origin(session)),
        ("backend pid", str(session.get("backend_pid") or "")),
        ("identity", session.get("identity_source") or "unattested"),
        ("attested as", session.get("identity") or ("unattested" if session.get("attested_us")
                                                    is not None else "")),
        ("masked", "" if session.get("masked") is None else
         ("yes: " + ", ".join(session.get("masked_columns") or []) if session["masked"]
          else "no (real values)")),
        ("started", iso_local(start) + ("" if session["started_us"] is not None
                                        else " (first seen; start not captured)")),
        ("ended", iso_local(session["ended_us"]) + (f" ({session['end_reason']})"
                                                    if session["end_reason"] else "")
         if session["ended_us"] is not None else "open"),
        ("statements", str(session["statements_stored"])),
    ):
        if value:
            header.add_row(label, value)
    console.print(header)
    entries = list(entries)
    times = _LocalTimes(entries[0]["ts_us"] if entries else None)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(times.header("time"), no_wrap=True)
    table.add_column("#", justify="right")
    table.add_column("event", ratio=1, min_width=16)
    table.add_column("result", max_width=24)
    table.add_column("duration", justify="right", no_wrap=True)
    shown = 0
    for entry in entries:
        shown += 1
        kind = entry["kind"]
        if kind == "statement":
            text = statement_text(entry["statement"])
            if entry.get("masked_columns"):
                text.append("\nmasked: " + ", ".join(entry["masked_columns"]), style="magenta")
            if entry.get("approval"):
                text.append("\n" + approval_note(entry["approval"]), style="cyan")
            table.add_row(times.cell(entry["ts_us"]), str(entry["seq"]), text, result(entry),
                          duration(entry["duration_us"]))
        elif kind == "session.attested":
            what = (f"identity attested: {entry['identity'] or 'unknown program'}; "
                    + ("masked" if entry["masked"] else "not masked"))
            table.add_row(times.cell(entry["ts_us"]), "", Text(what, style="green"), "", "")
        elif kind == "gap":
            table.add_row(times.cell(entry["ts_us"]), "", Text(
                f"capture gap: {entry['bytes'] or 0} {entry['direction']} bytes not seen "
                f"({entry['reason']})", style="yellow"), "", "")
        elif kind == "cancel":
            table.add_row(times.cell(entry["ts_us"]), "",
                          Text("cancel request for this backend", style="magenta"), "", "")
        elif kind == "session.started":
            table.add_row(times.cell(entry["ts_us"]), "", Text("session started", style="green"),
                          "", "")
        else:
            what = f"session ended ({entry['reason'] or 'unknown reason'})"
            outcome = Text(entry["sqlstate"] or "", style="bold red")
            if entry["message"]:
                outcome.append(f" {entry['message']}", style="red")
            table.add_row(times.cell(entry["ts_us"]), "", Text(what, style="green"), outcome, "")
    _print(console, table, shown, hidden, "timeline entries")
    return shown


def approval_note(link: dict[str, Any]) -> str:
    """The capture link of a statement refused pending approval, or of the run it allowed."""
    rid = link["request_id"]
    if link["role"] == "requested":
        status = link.get("status") or "pending"
        note = f"approval request {rid}: {status}"
        if link.get("reviewer"):
            note += f" by {link['reviewer']}"
        run = link.get("approved_run")
        if run:
            note += f"; approved run: session {run['session_id']} #{run['seq']}"
        return note
    note = f"approved run of approval request {rid}"
    if link.get("reviewer"):
        note += f" (approved by {link['reviewer']})"
    first = link.get("requested_in")
    if first:
        note += f"; requested in session {first['session_id']} #{first['seq']}"
    return note


def _print(console: Console, table: Table, shown: int, hidden: int, what: str) -> None:
    if shown == 0 and hidden == 0:
        console.print(f"No matching {what}.")
        return
    console.print(table)
    if hidden:
        console.print(f"{hidden} earlier {what} match but are not shown (latest {shown} shown); "
                      "use --limit N (0 = all), --since, or --json.", style="dim")


def _origin(row: dict[str, Any]) -> str:
    if row.get("client_addr"):
        port = row.get("client_port")
        return f"{row['client_addr']}:{port}" if port is not None else row["client_addr"]
    transport = row.get("transport") or ""
    return f"{transport} socket" if transport == "unix" else transport


def _uid(row: dict[str, Any]) -> str:
    user, uid = row.get("client_user"), row.get("client_uid")
    if user and uid is not None:
        return f"{user} (uid {uid})"
    return user or ("" if uid is None else f"uid {uid}")

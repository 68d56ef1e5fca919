"""PostgreSQL's own statement log as the oracle for what the agent captured.

The test clusters log with `log_statement = 'all'` and `log_line_prefix = '%m [%p] %q%u@%d '`:

    2026-11-21 21:40:00.123 UTC [1234] postgres@shop LOG:  statement: SELECT 1
    2026-11-21 21:40:00.124 UTC [1234] postgres@shop LOG:  execute <unnamed>: SELECT $1
    2026-11-21 21:40:00.125 UTC [1234] postgres@shop DETAIL:  parameters: $1 = '5'

Multi-line statements continue on lines starting with a tab. Simple-protocol statements are logged
once per Query message (a multi-statement string is one entry); extended-protocol ones at Execute
(src/backend/tcop/postgres.c: exec_simple_query, exec_execute_message).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^\S+ \S+ \S+ \[(?P<pid>\d+)\] (?:(?P<user>[^@\s]*)@(?P<db>\S*) )?"
                   r"(?P<level>[A-Z]+):  (?P<msg>.*)$")
_STATEMENT = re.compile(r"^(?:statement|execute (?:fetch from )?[^:]*): (?P<sql>.*)$", re.S)


@dataclass(frozen=True)
class Logged:
    pid: int
    user: str
    database: str
    sql: str
    extended: bool


def server_statements(log_file: Path) -> dict[int, list[Logged]]:
    """Statements the server logged, per backend pid, in order."""
    out: dict[int, list[Logged]] = defaultdict(list)
    current: list[str] | None = None
    meta: tuple[int, str, str, bool] | None = None

    def flush() -> None:
        if current is not None and meta is not None:
            out[meta[0]].append(Logged(meta[0], meta[1], meta[2], "\n".join(current), meta[3]))

    for line in log_file.read_text(errors="replace").splitlines():
        if line.startswith("\t"):
            if current is not None:
                current.append(line[1:])
            continue
        flush()
        current, meta = None, None
        m = _LINE.match(line)
        if not m or m["level"] != "LOG":
            continue
        s = _STATEMENT.match(m["msg"])
        if s:
            current = [s["sql"]]
            meta = (int(m["pid"]), m["user"] or "", m["db"] or "", not m["msg"].startswith("statement:"))
    flush()
    return dict(out)


def captured(store: str, *args: str) -> list[dict]:  # type: ignore[type-arg]
    """`pgwarden statements --store STORE --json ARGS...` as a list of dicts."""
    p = subprocess.run([sys.executable, "-m", "agent.cli", "statements", "--store", store, "--json",
                        *args], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def _squash(sql: str) -> str:
    return " ".join(sql.split()).rstrip(";").strip()


def compare(logged: list[Logged], got: list[dict]) -> list[str]:  # type: ignore[type-arg]
    """Differences between the server's log of one backend and what was captured for it.

    Every logged statement must be captured, in order: a simple-protocol entry may be captured as
    several statements of one query_seq (a multi-statement string), each a piece of the logged
    text. Captured statements the server did not log are allowed only if they failed (the
    server does not log statements that fail to parse). Returns human-readable problems.
    """
    problems = []
    i = 0
    for entry in logged:
        want = _squash(entry.sql)
        while i < len(got) and got[i].get("sqlstate") and _squash(got[i]["statement"] or "") not in want:
            i += 1  # a failed statement the server never logged (e.g. a syntax error)
        if i >= len(got):
            problems.append(f"pid {entry.pid}: not captured: {want!r}")
            continue
        group = [got[i]]
        i += 1
        while i < len(got) and got[i]["query_seq"] == group[0]["query_seq"] and group[0]["protocol"] == "simple":
            group.append(got[i])
            i += 1
        pieces = [_squash(g["statement"] or "") for g in group]
        if len(pieces) == 1 and pieces[0] != want:
            problems.append(f"pid {entry.pid}: expected {want!r}, captured {pieces[0]!r}")
        elif len(pieces) > 1 and not all(p in want for p in pieces):
            problems.append(f"pid {entry.pid}: expected {want!r}, captured pieces {pieces!r}")
        for g in group:
            if g["backend_pid"] != entry.pid or g["user"] != entry.user or g["database"] != entry.database:
                problems.append(f"pid {entry.pid}: identity mismatch in {g}")
    for g in got[i:]:
        if not g.get("sqlstate"):
            problems.append(f"captured but never logged: {g['statement']!r}")
    return problems

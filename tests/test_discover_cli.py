"""`pgwarden discover` as a program: progress on stderr, bounded sampling of large tables,
privileges, timeouts, exit codes, help; and the `agent.pii.discover` library API."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.pgcluster import PgCluster, free_port
from agent.pii import Progress, discover, suggestions

PGWARDEN = str(Path(sys.executable).with_name("pgwarden"))
DB = "pii_cli"
WIDE_COLUMNS = 48
WIDE_ROWS = 60_000


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PGWARDEN, "discover", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def db(pg_cluster: PgCluster) -> Any:
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg_cluster.psql(f"CREATE DATABASE {DB}")
    dsn = pg_cluster.dsn(DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A wide table too large to read whole (> 1024 pages): 48 columns, 60k rows. Three
        # columns hold PII the sampler must find through TABLESAMPLE.
        cols = ", ".join(f"c{i:02d} text" for i in range(WIDE_COLUMNS - 3))
        conn.execute(f"CREATE TABLE wide_events (id bigint, email text, client_ip inet, {cols})")
        exprs = ", ".join(f"md5(g::text || '{i}')" for i in range(WIDE_COLUMNS - 3))
        conn.execute(f"""INSERT INTO wide_events
            SELECT g, 'member' || g || '@example.org',
                   ('10.' || (g % 250) || '.' || (g % 199) || '.' || (g % 251 + 1))::inet, {exprs}
            FROM generate_series(1, {WIDE_ROWS}) g""")
        conn.execute("CREATE TABLE small_people (id int, courriel text, geheim text, note text)")
        conn.execute("""INSERT INTO small_people SELECT g, 'p' || g || '@example.fr',
                        'classified ' || g, 'hello' FROM generate_series(1, 50) g""")
        conn.execute("CREATE TABLE locked_table (id int, phone text)")
        conn.execute("INSERT INTO locked_table SELECT g, '+3361234' || lpad(g::text, 4, '0') "
                     "FROM generate_series(1, 30) g")
        conn.execute("CREATE SCHEMA other")
        conn.execute("CREATE TABLE other.contacts (email text)")
        conn.execute("INSERT INTO other.contacts SELECT 'o' || g || '@example.com' "
                     "FROM generate_series(1, 20) g")
        conn.execute("ANALYZE")
        conn.execute("DROP ROLE IF EXISTS pii_auditor")
        conn.execute("CREATE ROLE pii_auditor LOGIN")
        conn.execute("GRANT SELECT (id, geheim, note) ON small_people TO pii_auditor")
        conn.execute("GRANT SELECT ON wide_events TO pii_auditor")
        pages = conn.execute("SELECT pg_relation_size('wide_events') / "
                             "current_setting('block_size')::int").fetchone()[0]
    assert pages > 1024, pages  # precondition: the table is "large" for the default bound
    yield pg_cluster, dsn
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg_cluster.psql("DROP ROLE IF EXISTS pii_auditor")


@pytest.mark.pg
def test_progress_lines_on_stderr_and_large_table_sampled_not_read(db: Any) -> None:
    cluster, dsn = db
    log_start = cluster.log_file.stat().st_size
    proc = run("--dsn", dsn, "--json", "--schema", "public")
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stderr.splitlines()
                if re.match(r"pgwarden discover: \d+/\d+ columns", line)]
    counts = [int(re.search(r"(\d+)/(\d+) columns", line).group(1)) for line in progress]
    total = WIDE_COLUMNS + 4 + 2
    assert len(progress) >= 10, proc.stderr
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == total
    assert any("table public.wide_events" in line for line in progress)
    assert progress[-1].endswith("(100%), 3/3 tables")
    assert "\x1b[" not in proc.stderr  # plain lines, no terminal control sequences

    # The PII of the large table was found through the bounded sample.
    found = {o["name"]: o for o in map(json.loads, proc.stdout.splitlines())}
    assert found["email"]["class"] == "email" and found["email"]["sampled"] == 100
    assert found["client_ip"]["class"] == "ip_address"
    assert not any(n.startswith("c") and n[1:].isdigit() for n in found)  # md5 hex: not PII

    # ... and never read whole: every statement touching it used TABLESAMPLE SYSTEM.
    log = cluster.log_file.read_text(errors="replace")[log_start:]
    logged = [line for line in log.splitlines()
              if re.search(r"(statement|execute [^:]*): SELECT", line)]
    statements = [line for line in logged if '"wide_events"' in line]
    assert statements, "sampling statements were not logged"
    assert all("TABLESAMPLE SYSTEM" in s for s in statements), statements
    small = [line for line in logged if '"small_people"' in line]
    assert small and not any("TABLESAMPLE" in s for s in small)  # small tables are read whole


@pytest.mark.pg
def test_progress_bar_when_stderr_is_a_terminal(db: Any) -> None:
    """On a terminal, stderr gets a rich progress bar (not the plain lines); stdout is
    unchanged."""
    _, dsn = db
    master, slave = pty.openpty()
    proc = subprocess.Popen([PGWARDEN, "discover", "--dsn", dsn, "--json", "--schema", "other"],
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    stdout, _ = proc.communicate(timeout=120)
    os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "\u2501" in terminal and "\x1b[" in terminal  # a bar drawn with control sequences
    assert not re.search(r"pgwarden discover: \d+/\d+ columns", terminal)
    assert json.loads(stdout.splitlines()[0])["column"] == "other.contacts.email"


@pytest.mark.pg
def test_column_privileges_are_respected(db: Any) -> None:
    """A role without SELECT on a column still gets a name-based finding; nothing fails."""
    cluster, _ = db
    proc = run("--dsn", cluster.dsn(DB, user="pii_auditor"), "--json", "--all",
               "--schema", "public")
    assert proc.returncode == 0, proc.stderr
    rows = {(o["table"], o["name"]): o for o in map(json.loads, proc.stdout.splitlines())}
    courriel = rows[("small_people", "courriel")]
    assert courriel["class"] == "email" and courriel["sampled"] == 0
    assert "values not read: no SELECT privilege on the column" in courriel["evidence"]
    assert rows[("small_people", "note")]["class"] is None
    assert rows[("wide_events", "email")]["class"] == "email"
    # locked_table: no privilege at all, judged by name
    assert rows[("locked_table", "phone")]["class"] == "phone"


@pytest.mark.pg
def test_a_table_that_times_out_is_skipped_and_reported(db: Any) -> None:
    _, dsn = db
    holder = psycopg.connect(dsn)
    try:
        holder.execute("LOCK TABLE locked_table IN ACCESS EXCLUSIVE MODE")
        proc = run("--dsn", dsn, "--json", "--timeout", "1", "--schema", "public")
    finally:
        holder.rollback()
        holder.close()
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"skipped sampling public\.locked_table: canceling statement due to "
                     r"(statement timeout \(SQLSTATE 57014\)|lock timeout \(SQLSTATE 55P03\))",
                     proc.stderr), proc.stderr
    assert "1 tables skipped" in proc.stderr
    rows = {(o["table"], o["name"]): o for o in map(json.loads, proc.stdout.splitlines())}
    phone = rows[("locked_table", "phone")]
    assert phone["class"] == "phone" and any("values not read" in e for e in phone["evidence"])
    assert rows[("wide_events", "email")]["class"] == "email"  # the rest went on


@pytest.mark.pg
def test_table_output_and_schema_filter(db: Any, tmp_path: Path) -> None:
    _, dsn = db
    out = tmp_path / "s.yaml"
    proc = run("--dsn", dsn, "--schema", "other", "--write-suggestions", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["COLUMN", "CLASS", "CONF", "METHOD", "EVIDENCE"]
    assert len(lines) == 2 and lines[1].startswith("other.contacts.email")
    assert "20/20 sampled values are valid emails" in lines[1]
    assert re.search(r"1 PII columns in 1 of 1 tables .* 1 suggestions written to", proc.stderr)
    text = out.read_text()
    assert "other.contacts.email: {class: email, method: partial, confidence: " in text
    assert "@example.com" not in text + proc.stdout + proc.stderr


@pytest.mark.pg
def test_min_confidence_filters_output(db: Any) -> None:
    _, dsn = db
    proc = run("--dsn", dsn, "--json", "--schema", "public", "--min-confidence", "0.99")
    assert proc.returncode == 0
    assert all(json.loads(line)["confidence"] >= 0.99 for line in proc.stdout.splitlines())


def test_connection_error_exits_1() -> None:
    proc = run("--dsn", f"host=127.0.0.1 port={free_port()} dbname=x connect_timeout=3",
               timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("pgwarden discover: cannot connect:")
    assert proc.stdout == ""


@pytest.mark.parametrize("args, message", [
    ((), "Missing option '--dsn'"),
    (("--dsn", "dbname=x", "--sample", "0"), "--sample"),
    (("--dsn", "dbname=x", "--min-confidence", "0.2"), "--min-confidence"),
    (("--dsn", "this is = not a dsn"), "invalid --dsn"),
])
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    proc = run(*args, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_help_is_a_manual() -> None:
    proc = run("--help", timeout=60)
    assert proc.returncode == 0
    text = proc.stdout
    for needle in ("--dsn DSN", "--schema S", "--sample N", "--json", "--write-suggestions FILE",
                   "Exit codes: 0", "TABLESAMPLE SYSTEM", "fixed", "Examples:",
                   "payment_card    redact", "private_key     null", "email           partial",
                   ):
        assert needle in text, needle
    assert "sampled values are never printed, logged or written anywhere" in " ".join(text.split())


@pytest.mark.pg
def test_library_api(db: Any) -> None:
    _, dsn = db
    events: list[Progress] = []
    with psycopg.connect(dsn) as conn:
        result = discover(conn, schemas=["public", "other"], sample=20, progress=events.append)
    assert result.database == DB and result.tables == 4
    assert [e.columns_done for e in events] == sorted(e.columns_done for e in events)
    assert events[-1].columns_done == events[-1].columns_total == len(result.columns)
    email = next(c for c in result.columns if c.qualified == "public.wide_events.email")
    assert email.finding is not None and email.finding.sampled == 20
    contacts = next(c for c in result.columns if c.qualified == "other.contacts.email")
    assert contacts.finding is not None
    doc = suggestions(result)
    assert doc["masking"]["columns"]["other.contacts.email"] == {
        "class": "email", "method": "partial", "confidence": contacts.finding.confidence}
    assert set(doc["masking"]["columns"]) == {c.qualified for c in result.findings()}


def test_importing_the_command_is_cheap() -> None:
    """Loading the command (for `pgwarden --help`) imports neither psycopg, rich nor ruamel."""
    code = ("import sys; import agent.cli.discover_cmd; "
            "print(sorted(m for m in ('psycopg', 'rich', 'ruamel') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"

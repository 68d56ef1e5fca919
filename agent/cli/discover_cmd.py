"""`pgwarden discover`: find the columns that hold PII (thin layer over agent.pii)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import click

from agent.pii.classes import CLASSES
from agent.pii.classify import MIN_CONFIDENCE
from agent.pii.discover import DEFAULT_MAX_PAGES, DEFAULT_SAMPLE, ColumnResult, Discovery, Progress

_CLASS_LIST = "\n".join(f"  {name:<15} {method:<8} {text}"
                        for name, (method, text) in CLASSES.items())


class _PlainProgress:
    """Progress as plain lines on stderr: one at the start, one per 10% of columns, one at the
    end (for logs and pipes, where a progress bar would be noise)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last: tuple[int, bool] | None = None

    def __call__(self, p: Progress) -> None:
        if p.columns_total == 0:
            return
        key = (10 * p.columns_done // p.columns_total, p.tables_done == p.tables_total)
        if key == self.last:
            return
        self.last = key
        where = f", table {p.table}" if p.table else ""
        self.stream.write(f"pgwarden discover: {p.columns_done}/{p.columns_total} columns "
                          f"({100 * p.columns_done // p.columns_total}%), {p.tables_done}/"
                          f"{p.tables_total} tables{where}\n")
        self.stream.flush()


class _RichProgress:
    """A rich progress bar on stderr (a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.bar = Bar(TextColumn("[bold]discover[/] {task.description}"), BarColumn(),
                       MofNCompleteColumn(), TextColumn("columns"), TimeElapsedColumn(),
                       console=Console(stderr=True), transient=True)
        self.task = self.bar.add_task("", total=None)

    def __enter__(self) -> _RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def __call__(self, p: Progress) -> None:
        self.bar.update(self.task, total=p.columns_total or None, completed=p.columns_done,
                        description=p.table or "")


def _print_table(rows: list[ColumnResult], out: TextIO) -> None:
    headers = ("COLUMN", "CLASS", "CONF", "METHOD", "EVIDENCE")
    lines = []
    for r in rows:
        if r.finding:
            f = r.finding
            lines.append((r.qualified, f.pii_class, f"{f.confidence:.2f}", f.method,
                          "; ".join(f.evidence)))
        else:
            lines.append((r.qualified, "-", "-", "-", r.reason or ""))
    if out.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers, box=None, pad_edge=False)
        for line in lines:
            table.add_row(*line)
        Console(file=out).print(table)
        return
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers[:4])]
    for line in [headers, *lines]:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(line[:4], widths)) + "  "
                  + line[4] + "\n")


def _write_suggestions(path: Path, discovery: Discovery, min_confidence: float,
                       source: str) -> int:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    columns = CommentedMap()
    for r in discovery.findings(min_confidence):
        assert r.finding is not None
        entry = CommentedMap(
            [("class", r.finding.pii_class), ("method", r.finding.method),
             ("confidence", r.finding.confidence)])
        entry.fa.set_flow_style()
        columns[r.qualified] = entry
        columns.yaml_add_eol_comment("; ".join(r.finding.evidence), r.qualified)
    doc = CommentedMap([("masking", CommentedMap([("columns", columns)]))])
    generated = discovery.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    doc.yaml_set_start_comment(
        f"pgwarden discover suggestions (generated {generated} from {source}); review and copy "
        f"into pgwarden.yaml\n"
        f"methods: partial keeps a low-risk part, redact puts a fixed placeholder, null "
        f"returns NULL\n"
        f"a column listed in pgwarden.yaml overrides its suggestion; values were sampled, "
        f"never stored")
    yaml = YAML()
    yaml.width = 4096
    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent or Path(".")))
    try:
        with os.fdopen(fd, "w") as f:
            yaml.dump(doc, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(columns)


@click.command("discover", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", envvar="PGWARDEN_DSN", show_envvar=True, metavar="DSN", required=True,
              help="libpq connection string or URI of the database to examine, e.g. "
                   "'host=db1 dbname=shop user=auditor' or postgresql://auditor@db1/shop. "
                   "Prefer a role that can read the tables; the session is set read-only.")
@click.option("--schema", "schemas", multiple=True, metavar="S",
              help="Examine only schema S (repeat for several). Default: every schema except "
                   "pg_catalog, information_schema, pg_toast, temporary and pgwarden* schemas.")
@click.option("--sample", type=click.IntRange(1, 10_000), default=DEFAULT_SAMPLE,
              show_default=True, metavar="N", help="Non-null values sampled per column.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per column on stdout instead of a table.")
@click.option("--write-suggestions", "suggestions_path", metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write the findings as a YAML masking fragment (masking.columns) to FILE.")
@click.option("--min-confidence", type=click.FloatRange(MIN_CONFIDENCE, 1.0),
              default=MIN_CONFIDENCE, show_default=True, metavar="X",
              help="Report and suggest only findings at least this confident.")
@click.option("--all", "show_all", is_flag=True,
              help="Also list every examined column that was not flagged, with the reason.")
@click.option("--max-pages", type=click.IntRange(1), default=DEFAULT_MAX_PAGES,
              show_default=True, metavar="P",
              help="Tables larger than P pages (8 KiB each) are sampled with TABLESAMPLE "
                   "SYSTEM so that about P pages are read; smaller ones are read whole.")
@click.option("--timeout", type=click.IntRange(1), default=30, show_default=True, metavar="SEC",
              help="statement_timeout of each sampling query; a table that exceeds it is "
                   "reported as skipped and judged by column names only.")
def discover(dsn: str, schemas: tuple[str, ...], sample: int, as_json: bool,
             suggestions_path: Path | None, min_confidence: float, show_all: bool,
             max_pages: int, timeout: int) -> None:
    """Find the columns that hold PII or secrets, with no configuration.

    Lists the user tables of the database, samples up to N non-null values of each
    candidate column, and classifies every column by its name (a dictionary of common
    column names in English, French, German, Spanish, Italian, Portuguese and Dutch,
    snake_case, camelCase and compounds: cust_email_addr, telefono, geburtsdatum, nir)
    and by its values (validators with check digits: Luhn and card IIN ranges, IBAN
    mod 97, SSN ranges, NIR, DNI, BSN, CPF, codice fiscale; emails, phones, IPs, dates
    of birth; JWTs, provider API keys, PEM private keys, password hashes).

    Prints each flagged column with its class, confidence (0-1), default masking method
    and evidence. Evidence is counts and reasons, such as "97/100 sampled values are
    valid emails": sampled values are never printed, logged or written anywhere.

    \b
    What is read: tables up to --max-pages pages with ORDER BY random() LIMIT, larger
    ones with TABLESAMPLE SYSTEM, so a huge table costs about as much as a small one.
    Every query runs under --timeout; a table that fails (no privilege, lock, timeout)
    is reported on stderr and its columns are judged by name only.

    \b
    Rules that keep decoys out (docs/discovery.md):
      - value evidence alone needs >= 80% of sampled values passing a strong validator
      - a sample of >= 10 values with at most max(3, n/10) distinct ones is a fixed
        vocabulary (a status column repeating fixture emails), not personal data
      - card-like numbers failing Luhn, bare 9-digit numbers, any date: never enough alone
      - a clear name is rejected when >= 10 values contradict it (mail_server: hosts)

    \b
    Classes and default masking methods:
    {classes}

    \b
    Progress goes to stderr: a bar on a terminal, otherwise a line per 10% of columns.

    \b
    Examples:
      pgwarden discover --dsn 'dbname=shop' --schema public
      pgwarden discover --dsn "$DSN" --json | jq 'select(.class == "email")'
      pgwarden discover --dsn "$DSN" --write-suggestions pii-suggestions.yaml

    \b
    Exit codes: 0 done (whatever was found), 1 connection or database error,
    2 usage error.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from agent.pii.discover import discover as run_discovery

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise click.UsageError(f"invalid --dsn: {exc}") from None
    extra: dict[str, Any] = {"application_name": "pgwarden discover"}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = 10
    try:
        conn = psycopg.connect(dsn, autocommit=True, **extra)
    except psycopg.Error as exc:
        click.echo(f"pgwarden discover: cannot connect: {str(exc).strip()}", err=True)
        sys.exit(1)
    source = (f'database "{conn.info.dbname}" on {conn.info.host}:{conn.info.port}'
              if conn.info.host and not conn.info.host.startswith("/")
              else f'database "{conn.info.dbname}"')
    try:
        conn.execute("SET default_transaction_read_only = on")
        if sys.stderr.isatty():
            with _RichProgress() as bar:
                result = run_discovery(conn, schemas=schemas or None, sample=sample,
                                       max_pages=max_pages, statement_timeout_ms=timeout * 1000,
                                       progress=bar)
        else:
            result = run_discovery(conn, schemas=schemas or None, sample=sample,
                                   max_pages=max_pages, statement_timeout_ms=timeout * 1000,
                                   progress=_PlainProgress(sys.stderr))
    except psycopg.Error as exc:
        message = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
        click.echo(f"pgwarden discover: database error: {message.strip()}", err=True)
        sys.exit(1)
    finally:
        conn.close()

    flagged = result.findings(min_confidence)
    written = ""
    if suggestions_path is not None:  # before stdout: a closed pipe must not lose the file
        try:
            n = _write_suggestions(suggestions_path, result, min_confidence, source)
        except OSError as exc:
            click.echo(f"pgwarden discover: cannot write {suggestions_path}: {exc.strerror}",
                       err=True)
            sys.exit(1)
        written = f"; {n} suggestions written to {suggestions_path}"
    shown = result.columns if show_all else flagged
    if as_json:
        for r in shown:
            if r.finding is not None and r.finding.confidence < min_confidence:
                r = ColumnResult(r.schema, r.table, r.column, r.data_type, None,
                                 f"below --min-confidence {min_confidence}", r.sampled)
            click.echo(json.dumps(r.to_dict(), ensure_ascii=False))
    else:
        _print_table(shown, sys.stdout)
    for table, reason in result.skipped:
        click.echo(f"pgwarden discover: skipped sampling {table}: {reason}", err=True)
    tables_with = len({(r.schema, r.table) for r in flagged})
    click.echo(f"pgwarden discover: {len(flagged)} PII columns in {tables_with} of "
               f"{result.tables} tables ({len(result.columns)} columns examined, "
               f"{len(result.skipped)} tables skipped) in {source}{written}", err=True)


discover.help = (discover.help or "").replace("{classes}", _CLASS_LIST.replace("\n", "\n    "))


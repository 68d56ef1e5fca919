"""What a statement text does to a table, as far as the text shows (sqlglot, Postgres dialect).

The guard triggers know *that* a table lost or changed rows (the transition table counts them);
this module tells *how* the client asked for it, from ``current_query()``:

* ``summarize(text)`` parses the whole text once (it may hold several statements: the simple
  protocol sends them in one Query message) into a `Summary`: every UPDATE, DELETE, MERGE and
  upsert it contains (CTE-nested ones included), each with its target and whether its WHERE (or
  MERGE ... ON / WHEN condition) really restricts rows; plus what the parser cannot see into.
* ``verdict(summary, schema, table, op)`` answers for one trigger firing: ``restricted``,
  ``unrestricted`` or ``opaque``.

A predicate restricts rows when, after sqlglot's boolean simplification, some conjunct compares a
column of the target table with something other than itself: ``WHERE true``, ``WHERE 1=1``,
``WHERE id = id``, ``WHERE id = 5 OR 1 = 1``, ``WHERE random() < 0.5`` and
``UPDATE t ... FROM u WHERE u.x = 1`` do not. Literal values never change the answer, so callers
cache summaries by the literal-free normalized text (see ``lexer.normalize``).

Opaque means "the text cannot tell": a parse error, a statement sqlglot keeps as an
``exp.Command`` (DO, CALL, EXPLAIN, ...), a call to a function sqlglot does not know (it may run
any SQL), or a firing with no visible candidate statement (the write came from a function, a
trigger, a rule). Opaque is never safe; the policy decides (rule ``opaque_write``).

sqlglot is imported lazily: ~0.2-0.6 s once per backend, only when a statement needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RESTRICTED, UNRESTRICTED, OPAQUE = "restricted", "unrestricted", "opaque"

# Commands sqlglot leaves unparsed that cannot write table rows themselves. PREPARE only stores
# text: the later EXECUTE is resolved through pg_prepared_statements.
_INERT_COMMANDS = frozenset({
    "SET", "RESET", "SHOW", "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT",
    "RELEASE", "DEALLOCATE", "DISCARD", "LISTEN", "UNLISTEN", "NOTIFY", "PREPARE",
})

_sqlglot: Any = None


def _sg() -> Any:
    """Import sqlglot on first use and silence its 'falling back to Command' warnings."""
    global _sqlglot
    if _sqlglot is None:
        import logging  # here, not at the top: a backend may never need it (import time)

        import sqlglot
        import sqlglot.optimizer.simplify  # noqa: F401  (loads the submodule)

        logging.getLogger("sqlglot").setLevel(logging.CRITICAL)
        _sqlglot = sqlglot
    return _sqlglot


@dataclass(frozen=True)
class Write:
    """One UPDATE or DELETE the text asks for: ``op`` is "UPDATE" or "DELETE" (MERGE actions and
    upserts are reported as the op they perform); ``schema`` is None when unqualified; names are
    case-folded like PostgreSQL does (unquoted -> lower case)."""

    op: str
    schema: str | None
    table: str
    restricted: bool


@dataclass(frozen=True)
class Summary:
    """Everything `verdict` needs about one statement text.

    writes:    the UPDATE/DELETE candidates, in text order
    opaque:    reasons the text cannot be seen into ("unparseable", "DO", "CALL", ...)
    executes:  names of SQL-level prepared statements run by EXECUTE (resolved by the caller)
    calls:     lower-cased names of functions sqlglot does not know (the caller checks the catalog)
    """

    writes: tuple[Write, ...] = ()
    opaque: tuple[str, ...] = ()
    executes: tuple[str, ...] = ()
    calls: frozenset[str] = frozenset()


CLASSIFIER = "1"
"""Bumped with any change to what `summarize` returns: it keys the summaries backends share
(table pgwarden.classified), together with the extension version (which pins sqlglot)."""


def to_json(summary: Summary) -> dict[str, Any]:
    return {"writes": [[w.op, w.schema, w.table, w.restricted] for w in summary.writes],
            "opaque": list(summary.opaque), "executes": list(summary.executes),
            "calls": sorted(summary.calls)}


def from_json(doc: dict[str, Any]) -> Summary:
    return Summary(tuple(Write(*w) for w in doc["writes"]), tuple(doc["opaque"]),
                   tuple(doc["executes"]), frozenset(doc["calls"]))


def summarize(text: str) -> Summary:
    """Parse `text` (one or more statements) into a `Summary`; never raises on bad SQL."""
    sg = _sg()
    exp = sg.exp
    try:
        statements = [s for s in sg.parse(text, read="postgres") if s is not None]
    except Exception:  # sqlglot raises ParseError, TokenError and, on odd input, others
        return Summary(opaque=("unparseable",))
    writes: list[Write] = []
    opaque: list[str] = []
    executes: list[str] = []
    calls: set[str] = set()
    for stmt in statements:
        for node in stmt.find_all(exp.Command):
            name = str(node.this).upper()
            if name == "EXECUTE":
                executes.append(_prepared_name(str(node.expression.this if node.expression else "")))
            elif name not in _INERT_COMMANDS:
                opaque.append(name)
        for node in stmt.find_all(exp.Anonymous):
            calls.add(str(node.name).lower())
        writes.extend(_writes(stmt, exp))
    return Summary(tuple(writes), tuple(opaque), tuple(executes), frozenset(calls))


def verdict(summary: Summary, schema: str, table: str, op: str) -> tuple[str, str]:
    """(RESTRICTED | UNRESTRICTED | OPAQUE, reason) for an `op` firing on `schema`.`table`.

    Several candidates for the same table (a multi-statement string, a CTE and its outer
    statement) cannot be told apart: any unrestricted one makes the whole text unrestricted.
    """
    if summary.opaque:
        return OPAQUE, f"the statement contains {', '.join(sorted(set(summary.opaque)))}"
    mine = [w for w in summary.writes
            if w.op == op and w.table == table and w.schema in (None, schema)]
    if not mine:
        return OPAQUE, f"no {op} of {schema}.{table} is visible in the statement text"
    if any(not w.restricted for w in mine):
        return UNRESTRICTED, f"the {op} has no WHERE clause that restricts rows of {table}"
    return RESTRICTED, ""


def _prepared_name(args: str) -> str:
    from pgwarden_ext.lexer import tokens

    for kind, value in tokens(args):
        if kind == "ident":
            return value.lower()
        if kind == "qident":
            return value[1:-1].replace('""', '"')
        if kind not in ("ws", "line_comment", "block_comment"):
            break
    return ""


def _ident(node: Any) -> str | None:
    """PostgreSQL's view of an identifier node: quoted as is, unquoted lower-cased."""
    if node is None:
        return None
    name = str(node.this)
    return name if node.args.get("quoted") else name.lower()


def _target(table: Any, exp: Any) -> tuple[str | None, str, set[str]] | None:
    """(schema, name, names that may qualify its columns) of a DML target, or None when the
    target is not a plain table (a function, a subquery)."""
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        return None
    name = _ident(table.this) or ""
    schema = _ident(table.args.get("db"))
    alias = table.args.get("alias")
    qualifiers = {_ident(alias.this)} if alias is not None and alias.this is not None else {name}
    return schema, name, {q for q in qualifiers if q}


def _writes(stmt: Any, exp: Any) -> list[Write]:
    out: list[Write] = []
    for node in stmt.find_all(exp.Delete, exp.Update, exp.Merge, exp.Insert):
        if isinstance(node, exp.Update) and isinstance(node.parent, exp.When):
            continue  # MERGE ... THEN UPDATE: handled with its MERGE
        target = _target(node.this, exp)
        if target is None:
            # INSERT INTO t(cols): the target is a Schema node wrapping the table
            if isinstance(node, exp.Insert) and isinstance(node.this, exp.Schema):
                target = _target(node.this.this, exp)
            if target is None:
                continue
        schema, name, quals = target
        if isinstance(node, (exp.Delete, exp.Update)):
            op = "DELETE" if isinstance(node, exp.Delete) else "UPDATE"
            where = node.args.get("where")
            out.append(Write(op, schema, name, restricts(where.this if where else None, quals)))
        elif isinstance(node, exp.Merge):
            on = node.args.get("on")
            for when in (node.args.get("whens") or exp.Whens()).expressions:
                if not when.args.get("matched"):
                    continue  # WHEN NOT MATCHED ... THEN INSERT
                then = when.args.get("then")
                op = "UPDATE" if isinstance(then, exp.Update) else (
                    "DELETE" if str(getattr(then, "this", "")).upper() == "DELETE" else None)
                if op:
                    ok = restricts(on, quals) or restricts(when.args.get("condition"), quals)
                    out.append(Write(op, schema, name, ok))
        else:  # INSERT ... ON CONFLICT DO UPDATE: restricted to the conflicting key
            conflict = node.args.get("conflict")
            if conflict is not None and "UPDATE" in str(conflict.args.get("action", "")).upper():
                out.append(Write("UPDATE", schema, name, True))
    return out


def restricts(predicate: Any, qualifiers: set[str]) -> bool:
    """Whether `predicate` (a sqlglot expression or None) restricts rows of the target whose
    columns may be qualified by `qualifiers` (see module docstring)."""
    if predicate is None:
        return False
    sg = _sg()
    try:
        predicate = sg.optimizer.simplify.simplify(predicate.copy())
    except Exception:  # simplification is best effort; the structural test below still holds
        pass
    return _restricts(predicate, qualifiers, sg.exp)


def _restricts(e: Any, quals: set[str], exp: Any) -> bool:
    while isinstance(e, exp.Paren):
        e = e.this
    if isinstance(e, exp.And):
        return _restricts(e.left, quals, exp) or _restricts(e.right, quals, exp)
    if isinstance(e, exp.Or):
        return _restricts(e.left, quals, exp) and _restricts(e.right, quals, exp)
    if isinstance(e, exp.Boolean):
        return not e.this  # WHERE false restricts (to nothing); WHERE true does not
    if _self_comparison(e, quals, exp):
        return False
    return any(_is_target_column(c, quals) for c in e.find_all(exp.Column))


def _is_target_column(col: Any, quals: set[str]) -> bool:
    """Unqualified columns are taken as the target's (lenient; row thresholds back this up)."""
    qualifier = _ident(col.args.get("table"))
    return qualifier is None or qualifier in quals


def _self_comparison(e: Any, quals: set[str], exp: Any) -> bool:
    """``c = c``, ``c >= c``, ``c <= c``, ``c IS NOT DISTINCT FROM c`` on one target column."""
    if not isinstance(e, (exp.EQ, exp.GTE, exp.LTE, exp.NullSafeEQ)):
        return False
    a, b = e.this, e.expression
    return (isinstance(a, exp.Column) and isinstance(b, exp.Column)
            and _ident(a.this) == _ident(b.this)
            and _is_target_column(a, quals) and _is_target_column(b, quals))

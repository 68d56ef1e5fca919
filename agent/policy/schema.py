"""pgwarden.yaml: parse, validate with line and column, and produce the canonical document.

The file format is documented in docs/policy.md; the canonical document the extension stores is
described in pg_extension/python/pgwarden_ext/policy.py (the server re-checks that shape).
`load(text)` returns a `Policy` or raises `PolicyFileError` carrying every problem found, each
with its 1-based line and column, so one run shows everything to fix. Nothing here touches a
database.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

SCHEMA_VERSION = 1
RULES = ("no_drop", "no_truncate", "require_where", "max_rows", "protected_columns",
         "opaque_write", "no_rewrite")
ACTIONS = ("block", "approve", "allow", "off")
ENABLED_ACTIONS = ("block", "allow", "off")  # "approve" needs the approvals workflow (issue 5)
ROW_LIMITS = ("statement", "transaction", "opaque_statement")
DEFAULT_RULES: dict[str, Any] = {
    "no_drop": "block", "no_truncate": "block", "require_where": "block",
    "protected_columns": "block", "opaque_write": "block", "no_rewrite": "block",
    "max_rows": {"action": "block", "statement": None, "transaction": None,
                 "opaque_statement": None},
}
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_PATTERN = re.compile(r'^[^."\s]+(\.[^."\s]+)?$')


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the file: 1-based `line` and `col` (0 when unknown), the `path` of the
    offending value (``protect[0].rules.max_rows``) and what is wrong."""

    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.line}:{self.col}: " if self.line else ""
        return f"{where}{self.path + ': ' if self.path else ''}{self.message}"


class PolicyFileError(ValueError):
    """The policy file is invalid; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem], filename: str = "pgwarden.yaml") -> None:
        self.problems = problems
        self.filename = filename
        super().__init__("\n".join(f"{filename}:{p}" for p in problems))


@dataclass(frozen=True)
class Policy:
    """A valid policy: `doc` is the canonical document, `sha256` the hash of the file's bytes."""

    doc: dict[str, Any]
    source: str
    sha256: str


def load(text: str, filename: str = "pgwarden.yaml") -> Policy:
    """Parse and validate `text`; raise `PolicyFileError` with every problem found."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        data = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        msg = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise PolicyFileError([Problem(line, col, "", f"YAML syntax: {msg}")], filename) from None
    checker = _Checker()
    doc = checker.document(data)
    if checker.problems:
        raise PolicyFileError(checker.problems, filename)
    return Policy(doc, text, hashlib.sha256(text.encode("utf-8")).hexdigest())


class _Checker:
    """Walks the YAML tree once, collecting problems and building the canonical document."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, node: Any, key: Any, path: str, message: str) -> None:
        line, col = _position(node, key)
        self.problems.append(Problem(line, col, path, message))

    def mapping(self, parent: Any, key: Any, value: Any, path: str,
                allowed: tuple[str, ...]) -> CommentedMap | None:
        if not isinstance(value, dict):
            self.fail(parent, key, path, f"expected a mapping with keys {', '.join(allowed)}")
            return None
        for k in value:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), allowed, n=1)
                self.fail(value, k, f"{path}.{k}" if path else str(k), "unknown key" + (
                    f" (did you mean {hint[0]!r}?)" if hint else
                    f"; expected one of {', '.join(allowed)}"))
        return value

    def strings(self, parent: Any, key: str, path: str, pattern: re.Pattern[str] | None = None,
                what: str = "") -> list[str]:
        value = parent.get(key, []) if isinstance(parent, dict) else []
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        elif not isinstance(value, list):
            self.fail(parent, key, path, "expected a list of strings")
            return []
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.fail(value, i, f"{path}[{i}]", "expected a non-empty string")
            elif pattern is not None and not pattern.match(item):
                self.fail(value, i, f"{path}[{i}]", f"{item!r} is not {what}")
            else:
                out.append(item)
        return out

    def document(self, data: Any) -> dict[str, Any]:
        top = self.mapping(None, None, data, "", ("version", "protect", "principals"))
        if top is None:
            return {}
        if top.get("version") != SCHEMA_VERSION:
            self.fail(top, "version" if "version" in top else None, "version",
                      f"expected version: {SCHEMA_VERSION}")
        protect = self.protect_entries(top)
        names = [p["name"] for p in protect]
        principals = self.principals(top, names)
        return {"version": SCHEMA_VERSION, "protect": protect, "principals": principals}

    def protect_entries(self, top: CommentedMap) -> list[dict[str, Any]]:
        entries = top.get("protect")
        if not isinstance(entries, list) or not entries:
            self.fail(top, "protect" if "protect" in top else None, "protect",
                      "expected a non-empty list of protect entries")
            return []
        out, seen = [], set()
        for i, e in enumerate(entries):
            at = f"protect[{i}]"
            m = self.mapping(entries, i, e, at, ("name", "tables", "schemas", "functions",
                                                 "columns", "rules"))
            if m is None:
                continue
            name = self.name(m, at, seen)
            entry = {"name": name,
                     "tables": self.strings(m, "tables", f"{at}.tables", _PATTERN,
                                            "a table pattern (schema.name, globs allowed)"),
                     "schemas": self.strings(m, "schemas", f"{at}.schemas"),
                     "functions": self.strings(m, "functions", f"{at}.functions", _PATTERN,
                                               "a function pattern (schema.name)"),
                     "columns": self.strings(m, "columns", f"{at}.columns"),
                     "rules": self.rules(m, f"{at}.rules", partial=False)}
            if not (entry["tables"] or entry["schemas"] or entry["functions"]):
                self.fail(entries, i, at, "protects nothing: give tables, schemas or functions")
            out.append(entry)
        return out

    def principals(self, top: CommentedMap, protect_names: list[str]) -> list[dict[str, Any]]:
        entries = top.get("principals") or []
        if not isinstance(entries, list):
            self.fail(top, "principals", "principals", "expected a list of principals")
            return []
        out, seen = [], set()
        for i, e in enumerate(entries):
            at = f"principals[{i}]"
            m = self.mapping(entries, i, e, at, ("name", "match", "protect", "rules"))
            if m is None:
                continue
            name = self.name(m, at, seen)
            match = self.mapping(m, "match", m.get("match"), f"{at}.match",
                                 ("roles", "member_of", "identities"))
            sel = {k: self.strings(match, k, f"{at}.match.{k}") if match is not None else []
                   for k in ("roles", "member_of", "identities")}
            if match is not None and not any(sel.values()):
                self.fail(m, "match", f"{at}.match", "matches nobody in particular: give roles, "
                          "member_of or identities")
            scope = self.strings(m, "protect", f"{at}.protect")
            for j, p in enumerate(scope):
                if p not in protect_names:
                    self.fail(m.get("protect"), j, f"{at}.protect[{j}]",
                              f"no protect entry is named {p!r}")
            out.append({"name": name, "match": sel, "protect": scope,
                        "rules": self.rules(m, f"{at}.rules", partial=True)})
        return out

    def name(self, m: CommentedMap, at: str, seen: set[str]) -> str:
        name = m.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            self.fail(m, "name" if "name" in m else None, f"{at}.name",
                      "expected a name: lower-case letters, digits, '_' or '-'")
            return f"#{len(seen)}"
        if name in seen:
            self.fail(m, "name", f"{at}.name", f"duplicate name {name!r}")
        seen.add(name)
        return name

    def rules(self, parent: CommentedMap, at: str, partial: bool) -> dict[str, Any]:
        raw = parent.get("rules")
        out: dict[str, Any] = {} if partial else {
            k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_RULES.items()}
        if raw is None:
            if partial:
                self.fail(parent, None, at, "expected rules to override")
            return out
        m = self.mapping(parent, "rules", raw, at, RULES)
        if m is None:
            return out
        for rule, value in m.items():
            if rule not in RULES:
                continue
            if rule == "max_rows":
                limits = self.max_rows(m, value, f"{at}.max_rows")
                out["max_rows"] = {**(out.get("max_rows") or {}), **limits}
            elif self.action(m, rule, value, f"{at}.{rule}"):
                out[rule] = value
        return out

    def action(self, node: Any, key: Any, value: Any, at: str) -> bool:
        if value == "approve":
            self.fail(node, key, at, "action 'approve' needs pgwarden approvals, which this "
                      "version does not have yet; use block, allow or off")
            return False
        if value not in ENABLED_ACTIONS:
            self.fail(node, key, at, f"expected one of {', '.join(ENABLED_ACTIONS)}, "
                      f"got {value!r}")
            return False
        return True

    def max_rows(self, node: CommentedMap, value: Any, at: str) -> dict[str, Any]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = {"statement": value}
            node = {"max_rows": value}  # positions come from the parent below
        m = self.mapping(node, "max_rows", value, at, ("action", *ROW_LIMITS))
        out: dict[str, Any] = {}
        if m is None:
            return out
        for k, v in m.items():
            if k == "action":
                if self.action(m, k, v, f"{at}.action"):
                    out["action"] = v
            elif k in ROW_LIMITS:
                if v is None or v == "off":
                    out[k] = None
                elif isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                    out[k] = int(v)
                else:
                    self.fail(m, k, f"{at}.{k}", f"expected a row count (>= 0) or off, got {v!r}")
        return out


def _position(node: Any, key: Any) -> tuple[int, int]:
    """1-based (line, column) of `key` in a ruamel node (the node itself when key is None)."""
    try:
        if key is None:
            if hasattr(node, "lc"):
                return node.lc.line + 1, node.lc.col + 1
            return 0, 0
        if isinstance(node, CommentedSeq):
            line, col = node.lc.item(key)
        else:
            line, col = node.lc.key(key)
        return line + 1, col + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return 0, 0

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

from agent.pii.classes import DEFAULT_METHOD
from agent.sqlnames import split_qualified_name

SCHEMA_VERSION = 1
RULES = ("no_drop", "no_truncate", "require_where", "max_rows", "protected_columns",
         "opaque_write", "no_rewrite")
ACTIONS = ("block", "approve", "allow", "off")
ENABLED_ACTIONS = ACTIONS
NO_APPROVE_RULES = ("protected_columns",)  # decided row by row: one approval per row makes no sense
APPROVAL_DEFAULTS = {"request_ttl": 86400, "grant_ttl": 1800}  # seconds (docs/approvals.md)
_DURATION = re.compile(r"^([0-9]+)\s*(s|m|h|d)?$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
ROW_LIMITS = ("statement", "transaction", "opaque_statement")
DEFAULT_RULES: dict[str, Any] = {
    "no_drop": "block", "no_truncate": "block", "require_where": "block",
    "protected_columns": "block", "opaque_write": "block", "no_rewrite": "block",
    "max_rows": {"action": "block", "statement": None, "transaction": None,
                 "opaque_statement": None},
}
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_ROLE = re.compile(r"^[^\s]{1,63}$")
MASK_METHODS = ("partial", "redact", "pseudonym", "null", "placeholder")
PII_CLASSES = DEFAULT_METHOD  # PII class -> default masking method (agent/pii/classes.py)
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
        top = self.mapping(None, None, data, "", ("version", "protect", "principals",
                                                  "masking", "approvals"))
        if top is None:
            return {}
        if top.get("version") != SCHEMA_VERSION:
            self.fail(top, "version" if "version" in top else None, "version",
                      f"expected version: {SCHEMA_VERSION}")
        protect = self.protect_entries(top, required="masking" not in top)
        names = [p["name"] for p in protect]
        principals = self.principals(top, names)
        doc = {"version": SCHEMA_VERSION, "protect": protect, "principals": principals}
        if "masking" in top:
            doc["masking"] = self.masking(top)
        if "approvals" in top:
            doc["approvals"] = self.approvals(top)
        return doc

    def approvals(self, top: CommentedMap) -> dict[str, Any]:
        """The approvals section (docs/approvals.md): how long requests and grants live, and
        who may review (session_user globs, group memberships; default: pgwarden admins)."""
        out: dict[str, Any] = {**APPROVAL_DEFAULTS, "reviewers": {"roles": [], "member_of": []}}
        m = self.mapping(top, "approvals", top.get("approvals"), "approvals",
                         ("request_ttl", "grant_ttl", "reviewers"))
        if m is None:
            return out
        for key in ("request_ttl", "grant_ttl"):
            if key in m:
                value = str(m[key]).strip()
                match = _DURATION.match(value)
                if not match or int(match.group(1)) == 0:
                    self.fail(m, key, f"approvals.{key}", f"expected a duration such as 90s, "
                              f"15m, 24h or 7d, got {m[key]!r}")
                else:
                    out[key] = int(match.group(1)) * _UNITS[match.group(2)]
        if "reviewers" in m:
            r = self.mapping(m, "reviewers", m.get("reviewers"), "approvals.reviewers",
                             ("roles", "member_of"))
            if r is not None:
                out["reviewers"] = {k: self.strings(r, k, f"approvals.reviewers.{k}", _ROLE,
                                                    "a role name or glob")
                                    for k in ("roles", "member_of")}
        return out

    def masking(self, top: CommentedMap) -> dict[str, Any]:
        """The masking section (docs/masking.md); columns accept discover's suggestions."""
        out: dict[str, Any] = {"mask": {"roles": [], "identities": []},
                               "unmask": {"identities": []}, "shared_roles": [], "columns": []}
        m = self.mapping(top, "masking", top.get("masking"), "masking",
                         ("mask", "unmask", "shared_roles", "columns"))
        if m is None:
            return out
        mask = self.mapping(m, "mask", m.get("mask", CommentedMap()), "masking.mask",
                            ("roles", "identities"))
        if mask is not None:
            out["mask"]["roles"] = self.strings(mask, "roles", "masking.mask.roles", _ROLE,
                                                "a role name or glob")
            out["mask"]["identities"] = self.strings(mask, "identities",
                                                     "masking.mask.identities")
        unmask = self.mapping(m, "unmask", m.get("unmask", CommentedMap()), "masking.unmask",
                              ("identities",))
        if unmask is not None:
            out["unmask"]["identities"] = self.strings(unmask, "identities",
                                                       "masking.unmask.identities")
        out["shared_roles"] = self.strings(m, "shared_roles", "masking.shared_roles", _ROLE,
                                           "a role name or glob")
        if (out["mask"]["identities"] or out["unmask"]["identities"]) \
                and not out["shared_roles"]:
            self.fail(m, "shared_roles" if "shared_roles" in m else "mask", "masking",
                      "identities decide only for shared_roles: name the roles several "
                      "programs share")
        cols = m.get("columns")
        if cols is None:
            return out
        if not isinstance(cols, dict):
            self.fail(m, "columns", "masking.columns",
                      "expected a mapping of schema.table.column to {class, method}")
            return out
        for key, value in cols.items():
            at = f"masking.columns.{key}"
            try:
                schema, table, column = _column_key(str(key))
            except ValueError as e:
                self.fail(cols, key, at, str(e))
                continue
            spec = self.column_spec(cols, key, value, at)
            if spec is not None:
                out["columns"].append({"schema": schema, "table": table, "column": column,
                                       **spec})
        return out

    def column_spec(self, parent: Any, key: Any, value: Any, at: str) -> dict[str, Any] | None:
        if value is False or value == "off":
            return {"class": None, "method": "off", "value": None}
        if isinstance(value, str):
            value = {"method": value}
            parent = {key: value}
        spec = self.mapping(parent, key, value, at, ("class", "method", "confidence", "value"))
        if spec is None:
            return None
        cls, method, placeholder = spec.get("class"), spec.get("method"), spec.get("value")
        ok = True
        if cls is not None and cls not in PII_CLASSES:
            hint = difflib.get_close_matches(str(cls), list(PII_CLASSES), n=1)
            self.fail(spec, "class", f"{at}.class", f"unknown PII class {cls!r}" + (
                f" (did you mean {hint[0]!r}?)" if hint else ""))
            ok = False
        if "method" in spec and method is None:
            self.fail(spec, "method", f"{at}.method", "write 'null' in quotes (YAML reads a "
                      "bare null as no value)")
            ok = False
        elif method is not None and method not in (*MASK_METHODS, "off"):
            self.fail(spec, "method", f"{at}.method",
                      f"expected one of {', '.join(MASK_METHODS)} or off, got {method!r}")
            ok = False
        if cls is None and method is None and "method" not in spec:
            self.fail(parent, key, at, "give a class, a method, or both")
            ok = False
        conf = spec.get("confidence")
        if conf is not None and (isinstance(conf, bool) or not isinstance(conf, (int, float))
                                 or not 0 <= conf <= 1):
            self.fail(spec, "confidence", f"{at}.confidence", "expected a number from 0 to 1")
            ok = False
        if (method == "placeholder") != (placeholder is not None):
            self.fail(spec, "value" if "value" in spec else "method", f"{at}.value",
                      "a placeholder value goes with method placeholder, and only with it")
            ok = False
        elif placeholder is not None and not isinstance(placeholder, (str, int, float)):
            self.fail(spec, "value", f"{at}.value", "expected a text or number")
            ok = False
        if not ok:
            return None
        if method is None:
            method = PII_CLASSES[cls]
        return {"class": cls, "method": method,
                "value": None if placeholder is None else str(placeholder)}

    def protect_entries(self, top: CommentedMap, required: bool = True) -> list[dict[str, Any]]:
        entries = top.get("protect")
        if not required and entries is None:
            return []
        if not isinstance(entries, list) or (required and not entries):
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
                if value == "approve" and rule in NO_APPROVE_RULES:
                    self.fail(m, rule, f"{at}.{rule}", f"action 'approve' is not available for "
                              f"{rule} (decided row by row); use block, allow or off")
                else:
                    out[rule] = value
        return out

    def action(self, node: Any, key: Any, value: Any, at: str) -> bool:
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


def _column_key(text: str) -> tuple[str, str, str]:
    """`schema.table.column` (parts "quoted" as in SQL when needed; unquoted parts fold to lower
    case, as PostgreSQL reads them) -> its three names. Raises ValueError otherwise."""
    parts = split_qualified_name(text)
    if len(parts) != 3:
        raise ValueError(f"expected schema.table.column, got {text!r}")
    return parts[0], parts[1], parts[2]


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

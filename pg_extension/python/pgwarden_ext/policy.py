"""The canonical policy document and rule resolution per (protect entry, principal).

``pgwarden policy apply`` validates ``pgwarden.yaml`` (with line and column on errors, see
``agent/policy/schema.py``) and sends the *canonical* form below as jsonb; `check` re-checks that
shape server-side so a hand-written call to ``pgwarden.apply_policy`` cannot store nonsense.

Canonical document (every key present)::

    {"version": 1,
     "protect": [{"name": "core",
                  "tables": ["public.customers", "app.*"],      # schema.name globs
                  "schemas": ["app"], "functions": ["app.*"],    # globs
                  "columns": ["id", "api_key"],                  # protected column names
                  "rules": {"no_drop": "block", "no_truncate": "block", "require_where": "block",
                            "protected_columns": "block", "opaque_write": "block",
                            "no_rewrite": "block",
                            "max_rows": {"action": "block", "statement": 500,
                                         "transaction": 5000, "opaque_statement": null}}}],
     "masking": {...},                                           # optional: see mask.py
     "approvals": {"request_ttl": 86400, "grant_ttl": 1800,      # optional: see approvals.py
                   "reviewers": {"roles": [], "member_of": []}},
     "principals": [{"name": "migrations",
                     "match": {"roles": ["migrator"], "member_of": [], "identities": []},
                     "protect": [],                              # [] = every protect entry
                     "rules": {"no_drop": "allow"}}]}            # partial override

Resolution: for a session and a protect entry, the first principal whose ``match`` matches and
whose ``protect`` list is empty or names the entry overrides the entry's rules key by key
(``max_rows`` field by field). Sessions are matched on ``session_user`` (never ``current_user``:
SET ROLE and SECURITY DEFINER must not change who you are), group membership, and the attested
identity (issue 4; until it lands every session is ``unattested``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

SCHEMA_VERSION = 1
RULES = ("no_drop", "no_truncate", "require_where", "max_rows", "protected_columns",
         "opaque_write", "no_rewrite")
ACTIONS = ("block", "approve", "allow", "off")
ROW_LIMITS = ("statement", "transaction", "opaque_statement")
INTEGRITY_RULE = "guard_integrity"
"""Self-defence: changes to pgwarden's own objects and guard triggers by non-admins."""
UNATTESTED = "unattested"


class PolicyError(ValueError):
    """The canonical document is malformed; the message names the path, e.g. protect[0].rules."""


@dataclass(frozen=True)
class Session:
    """Who is asking: ``user`` is session_user, ``identity`` the attested identity or None,
    ``groups`` the roles session_user is a member of (only filled when the policy uses them)."""

    user: str
    identity: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Rules:
    """Effective rules for one (protect entry, session): ``actions`` maps each rule in `RULES`
    to an action; ``limits`` maps each of `ROW_LIMITS` to a row count or None (no limit);
    ``principal`` names the principal entry that matched, None for the entry's defaults."""

    protect: str
    principal: str | None
    actions: dict[str, str]
    limits: dict[str, int | None]

    def action(self, rule: str) -> str:
        return self.actions[rule]


class Compiled:
    """A checked canonical document, ready for per-session resolution."""

    def __init__(self, doc: dict[str, Any]) -> None:
        check(doc)
        self.doc = doc
        self.protect = {p["name"]: p for p in doc["protect"]}
        self.principals = doc["principals"]
        self.uses_groups = any(p["match"]["member_of"] for p in self.principals)
        self.uses_identities = any(p["match"]["identities"] for p in self.principals)

    def rules(self, protect: str, session: Session) -> Rules:
        """Effective `Rules` of entry `protect` for `session` (KeyError if no such entry)."""
        base = self.protect[protect]["rules"]
        actions = {r: base[r] for r in RULES if r != "max_rows"}
        actions["max_rows"] = base["max_rows"]["action"]
        limits = {k: base["max_rows"][k] for k in ROW_LIMITS}
        for p in self.principals:
            if p["protect"] and protect not in p["protect"]:
                continue
            if not matches(p["match"], session):
                continue
            for rule, value in p["rules"].items():
                if rule == "max_rows":
                    actions["max_rows"] = value.get("action", actions["max_rows"])
                    limits.update({k: value[k] for k in ROW_LIMITS if k in value})
                else:
                    actions[rule] = value
            return Rules(protect, p["name"], actions, limits)
        return Rules(protect, None, actions, limits)


def matches(match: dict[str, list[str]], session: Session) -> bool:
    """All given selectors must match; each selector matches if any of its globs does."""
    if match["roles"] and not any(fnmatchcase(session.user, g) for g in match["roles"]):
        return False
    if match["member_of"] and not session.groups.intersection(match["member_of"]):
        return False
    if match["identities"]:
        ident = session.identity or UNATTESTED
        if not any(fnmatchcase(ident, g) for g in match["identities"]):
            return False
    return True


def glob_match(pattern: str, schema: str, name: str) -> bool:
    """Whether ``schema.name`` matches a ``schema.name`` glob (a bare glob means public.glob)."""
    if "." not in pattern:
        pattern = "public." + pattern
    return fnmatchcase(f"{schema}.{name}", pattern)


def check(doc: Any) -> None:
    """Raise `PolicyError` unless `doc` is a canonical document (see module docstring)."""
    _expect(isinstance(doc, dict), "", "an object")
    _expect(doc.get("version") == SCHEMA_VERSION, "version", f"{SCHEMA_VERSION}")
    _expect(isinstance(doc.get("protect"), list), "protect", "a list")
    _expect(isinstance(doc.get("principals"), list), "principals", "a list")
    names: set[str] = set()
    for i, p in enumerate(doc["protect"]):
        at = f"protect[{i}]"
        _expect(isinstance(p, dict) and isinstance(p.get("name"), str), f"{at}.name", "a name")
        _expect(p["name"] not in names, f"{at}.name", "a unique name")
        names.add(p["name"])
        for key in ("tables", "schemas", "functions", "columns"):
            _strings(p.get(key), f"{at}.{key}")
        _rules(p.get("rules"), f"{at}.rules", partial=False)
    for i, p in enumerate(doc["principals"]):
        at = f"principals[{i}]"
        _expect(isinstance(p, dict) and isinstance(p.get("name"), str), f"{at}.name", "a name")
        m = p.get("match")
        _expect(isinstance(m, dict) and set(m) == {"roles", "member_of", "identities"},
                f"{at}.match", "roles, member_of and identities")
        for key in m:
            _strings(m[key], f"{at}.match.{key}")
        _strings(p.get("protect"), f"{at}.protect")
        for name in p["protect"]:
            _expect(name in names, f"{at}.protect", f"names of protect entries, not {name!r}")
        _rules(p.get("rules"), f"{at}.rules", partial=True)
    if "masking" in doc:
        from pgwarden_ext import mask

        mask.check(doc["masking"], lambda at, what: _expect(False, at, what))
    if "approvals" in doc:
        from pgwarden_ext import approvals

        approvals.check(doc["approvals"], lambda ok, at, what: _expect(ok, at, what))


def _rules(rules: Any, at: str, partial: bool) -> None:
    _expect(isinstance(rules, dict), at, "an object")
    unknown = set(rules) - set(RULES)
    _expect(not unknown, at, f"rules among {', '.join(RULES)}")
    _expect(partial or set(rules) == set(RULES), at, "every rule")
    for rule, value in rules.items():
        if rule == "max_rows":
            _expect(isinstance(value, dict), f"{at}.max_rows", "an object")
            allowed = {"action", *ROW_LIMITS}
            _expect(set(value) <= allowed and (partial or set(value) == allowed),
                    f"{at}.max_rows", "action, statement, transaction, opaque_statement")
            if "action" in value:
                _expect(value["action"] in ACTIONS, f"{at}.max_rows.action", "an action")
            for k in ROW_LIMITS:
                v = value.get(k)
                _expect(v is None or isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                        f"{at}.max_rows.{k}", "a row count or null")
        else:
            _expect(value in ACTIONS, f"{at}.{rule}", f"one of {', '.join(ACTIONS)}")


def _strings(value: Any, at: str) -> None:
    _expect(isinstance(value, list) and all(isinstance(v, str) and v for v in value), at,
            "a list of non-empty strings")


def _expect(ok: bool, at: str, what: str) -> None:
    if not ok:
        raise PolicyError(f"policy document: {at or 'document'} must be {what}")

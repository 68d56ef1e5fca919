"""Dynamic masking: the policy's ``masking`` section -> catalog -> generated views + lock-down.

How a masked session gets masked values through its usual SQL (docs/masking.md):

* every table with masked columns gets views owned by ``pgwarden_mask_owner`` (a NOLOGIN,
  non-superuser role that may read the table): ``pgwarden_mask_<schema>.<table>`` for roles
  masked in every session (each masked column *is* its masking expression: nothing is decided
  at run time, so nothing can be fooled) and ``pgwarden_gate_<schema>.<table>`` for shared
  roles (``CASE WHEN <decision> THEN <masked> ELSE <column> END``; the decision, from the
  session's role and attested identity, is one InitPlan computed by a security-barrier view in
  ``pgwarden_maskd``, so it runs once per statement and a cached generic plan re-runs it);
* governed roles get those schemas in front of their ``search_path`` (in this database), SELECT
  on the views, and lose what would read past them (`lockdown`).

Masking expressions are allow-listed templates filled with quoted identifiers and literals, and
expanded into the view text (no function to inline at plan time, none called per row).

Entry points: `check` (canonical document), `changes` (plan; apply executes the same list),
`apply`, `drift_findings`, the event-trigger handlers `on_ddl_start`, `on_ddl_end`,
`on_sql_drop`, and `unmask_all` (uninstall).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

METHODS = ("partial", "redact", "pseudonym", "null", "placeholder")
# The PII classes of agent/pii/classes.py and their default methods (a test keeps them equal).
DEFAULT_METHOD = {
    "person_name": "partial", "first_name": "partial", "last_name": "partial",
    "email": "partial", "phone": "partial", "username": "partial", "address": "redact",
    "postal_code": "redact", "city": "redact", "date_of_birth": "redact", "gender": "redact",
    "geolocation": "redact", "ip_address": "redact", "national_id": "redact", "tax_id": "redact",
    "passport": "redact", "driver_license": "redact", "iban": "redact", "bank_account": "redact",
    "payment_card": "redact", "secret": "redact", "password": "null", "password_hash": "null",
    "private_key": "null",
}
OWNER = "pgwarden_mask_owner"
INNER_SCHEMA = "pgwarden_maskd"
FAMILIES = {"role": "mask", "identity": "gate"}  # role mode -> view family
UNATTESTED = "unattested"
# Predefined roles whose membership reads past masking (or other sessions' statement text).
DANGEROUS_ROLES = ("pg_read_all_data", "pg_write_all_data", "pg_read_server_files",
                   "pg_write_server_files", "pg_execute_server_program", "pg_read_all_stats",
                   "pg_monitor")
RELKINDS = ("r", "p", "m", "f")
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pgwarden", "pgwarden_dblink")


class MaskError(ValueError):
    """The masking section cannot be enforced as written (the message says what to fix)."""


# -- the canonical document ---------------------------------------------------------------------

def empty() -> dict[str, Any]:
    return {"mask": {"roles": [], "identities": []}, "unmask": {"identities": []},
            "shared_roles": [], "columns": []}


def check(m: Any, fail: Any) -> None:
    """Check the canonical ``masking`` object; `fail(path, what)` raises (policy.PolicyError)."""
    if not isinstance(m, dict) or set(m) != set(empty()):
        fail("masking", "mask, unmask, shared_roles and columns")
    for path, value in (("masking.mask.roles", m["mask"].get("roles")),
                        ("masking.mask.identities", m["mask"].get("identities")),
                        ("masking.unmask.identities", m["unmask"].get("identities")),
                        ("masking.shared_roles", m["shared_roles"])):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            fail(path, "a list of non-empty strings")
    if set(m["mask"]) != {"roles", "identities"} or set(m["unmask"]) != {"identities"}:
        fail("masking.mask", "roles and identities; unmask: identities")
    if not isinstance(m["columns"], list):
        fail("masking.columns", "a list")
    seen = set()
    for i, c in enumerate(m["columns"]):
        at = f"masking.columns[{i}]"
        if not isinstance(c, dict) or set(c) != {"schema", "table", "column", "class", "method",
                                                 "value"}:
            fail(at, "schema, table, column, class, method and value")
        if not all(isinstance(c[k], str) and c[k] for k in ("schema", "table", "column")):
            fail(at, "named by schema, table and column")
        key = (c["schema"], c["table"], c["column"])
        if key in seen:
            fail(at, "listed once")
        seen.add(key)
        if c["method"] not in (*METHODS, "off"):
            fail(f"{at}.method", f"one of {', '.join(METHODS)} or off")
        if c["class"] is not None and c["class"] not in DEFAULT_METHOD:
            fail(f"{at}.class", "a PII class of pgwarden discover")
        if (c["method"] == "placeholder") != isinstance(c["value"], str):
            fail(f"{at}.value", "a string exactly when the method is placeholder")


def glob_regex(glob: str) -> str:
    """An anchored POSIX regex (PostgreSQL's ~) for an identity glob: ``*`` any characters,
    ``?`` one character, everything else literal (no ``[...]`` sets: identities are names)."""
    out = ["^"]
    for ch in glob:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append(ch if ch.isalnum() or ch in "_- :/" else "\\" + ch)
    return "".join(out) + "$"


def identity_masked(mask_identities: list[str], unmask_identities: list[str],
                    identity: str | None) -> bool:
    """The rule `pgwarden._identity_masks` applies in SQL (a test keeps them equal)."""
    def match(globs: list[str], name: str) -> bool:
        return any(re.match(glob_regex(g), name, re.S) for g in globs)

    if match(unmask_identities, identity or UNATTESTED):
        return False
    if identity is None:
        return True
    return match(mask_identities, identity)


# -- masking expressions --------------------------------------------------------------------------

_TEXT_TYPES = ("text", "character varying", "character", "name", "citext", "bpchar")
_REDACT = {
    "S": "'[redacted]'", "N": "0", "B": None,
    "date": "'1900-01-01'", "timestamp without time zone": "'1900-01-01 00:00:00'",
    "timestamp with time zone": "'1900-01-01 00:00:00+00'", "time without time zone": "'00:00'",
    "inet": "'0.0.0.0'", "cidr": "'0.0.0.0/32'", "macaddr": "'00:00:00:00:00:00'",
    "uuid": "'00000000-0000-0000-0000-000000000000'", "bytea": "'\\x'",
}
_INTEGERS = ("smallint", "integer", "bigint")


def _base_type(type_: str) -> str:
    return re.sub(r"\(.*\)", "", type_).replace("[]", "").strip()


def partial_text(cls: str | None, v: str) -> str:
    """The partial masking of a text value `v` (an SQL expression) for a PII class."""
    if cls == "email":
        return f"pg_catalog.left({v}, 1) || '***@' || pg_catalog.split_part({v}, '@', 2)"
    if cls in ("person_name", "first_name", "last_name"):
        return (f"CASE WHEN pg_catalog.strpos({v}, ' ') > 0 THEN pg_catalog.left({v}, 1) ||"
                f" '*** ' || pg_catalog.left(pg_catalog.split_part({v}, ' ', -1), 1) || '**'"
                f" ELSE pg_catalog.left({v}, 1) || '***' END")
    keep = {"phone": (2, "******"), "payment_card": (4, "************"),
            "bank_account": (4, "******"), "national_id": (2, "*******"),
            "tax_id": (2, "*******"), "passport": (2, "*******"),
            "driver_license": (2, "*******")}.get(cls or "")
    if keep:
        return f"'{keep[1]}' || pg_catalog.right({v}, {keep[0]})"
    if cls == "iban":
        return f"pg_catalog.left({v}, 2) || '**************' || pg_catalog.right({v}, 4)"
    return f"pg_catalog.left({v}, 1) || '***'"


@dataclass(frozen=True)
class Column:
    """One column of a masked table; `method` is None when the column is not masked."""

    attnum: int
    name: str
    type: str          # format_type() text, e.g. character varying(255)
    category: str      # pg_type.typcategory
    method: str | None = None
    cls: str | None = None
    value: str | None = None


def mask_expr(col: Column, ref: str, key: tuple[str, str]) -> str:
    """SQL for the masked value of `col` (read as `ref`), with the column's own type."""
    t, base = col.type, _base_type(col.type)
    text = base in _TEXT_TYPES or col.category == "S"
    if col.method == "null":
        return f"NULL::{t}"
    if col.method == "placeholder":
        return f"{_literal(col.value or '')}::{t}"
    if col.method == "pseudonym":
        if text:
            return (f"('p_' || pg_catalog.left(pg_catalog.encode(pg_catalog.sha256({key[1]} ||"
                    f" pg_catalog.sha256({key[0]} || pg_catalog.convert_to({ref}::text,"
                    f" 'UTF8'))), 'hex'), 16))::{t}")
        if base in _INTEGERS:
            bits = {"smallint": 14, "integer": 30, "bigint": 62}[base]
            return (f"('x' || pg_catalog.left(pg_catalog.encode(pg_catalog.sha256({key[1]} ||"
                    f" pg_catalog.sha256({key[0]} || pg_catalog.convert_to({ref}::text,"
                    f" 'UTF8'))), 'hex'), 16))::bit(64)::bigint::bit({bits})::bigint::{t}")
        if base == "uuid":
            return (f"pg_catalog.left(pg_catalog.encode(pg_catalog.sha256({key[1]} ||"
                    f" pg_catalog.sha256({key[0]} || pg_catalog.convert_to({ref}::text,"
                    f" 'UTF8'))), 'hex'), 32)::uuid")
        raise MaskError(f"column {col.name} ({t}): pseudonym masks text, integer and uuid "
                        "columns; use redact, null or placeholder")
    if col.method == "partial":
        if text:
            expr = partial_text(col.cls, ref)
            return expr if base == "text" else f"({expr})::{t}"
        if col.category == "D" and base in ("date", "timestamp without time zone",
                                             "timestamp with time zone"):
            return f"pg_catalog.date_trunc('year', {ref})::{t}"
    # redact (and partial of types without a partial form): a fixed placeholder of the type
    const = _REDACT.get(base, _REDACT.get(col.category) if col.category in ("S", "N") else None)
    return f"{const}::{t}" if const else f"NULL::{t}"


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def quote_ident(s: str) -> str:
    return s if re.fullmatch(r"[a-z_][a-z0-9_]*", s) and s not in _RESERVED else \
        '"' + s.replace('"', '""') + '"'


_RESERVED = frozenset("""all analyse analyze and any array as asc asymmetric both case cast check
collate column constraint create current_catalog current_date current_role current_time
current_timestamp current_user default deferrable desc distinct do else end except false fetch
for foreign from grant group having in initially intersect into lateral leading limit localtime
localtimestamp not null offset on only or order placing primary references returning select
session_user some symmetric table then to trailing true union unique user using variadic when
where window with authorization binary collation concurrently cross current_schema freeze full
ilike inner is isnull join left like natural notnull outer overlaps right similar tablesample
verbose""".split())


def family_schema(family: str, schema: str) -> str:
    """pgwarden_mask_<schema> / pgwarden_gate_<schema> (hashed when too long for a name)."""
    name = f"pgwarden_{family}_{schema}"
    if len(name.encode()) > 63:
        name = f"pgwarden_{family}_{hashlib.sha256(schema.encode()).hexdigest()[:16]}"
    return name


@dataclass
class Table:
    relid: int
    schema: str
    name: str
    kind: str
    owner: int
    columns: list[Column] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def masked(self) -> list[Column]:
        return [c for c in self.columns if c.method]

    def display(self, col: str) -> str:
        return ".".join(p if re.fullmatch(r"[a-z_][a-z0-9_$]*", p) else quote_ident(p)
                        for p in (self.schema, self.name, col))


KEY = ("(SELECT k.ipad FROM pgwarden.mask_key k)", "(SELECT k.opad FROM pgwarden.mask_key k)")


def view_ddl(t: Table, family: str, mask_roles: list[int],
             unattested_masked: bool = True) -> tuple[str, str | None, list[str]]:
    """(view, inner view or None, CREATE statements) of one family for table `t`."""
    view = f"{quote_ident(family_schema(family, t.schema))}.{quote_ident(t.name)}"
    if family == "mask":
        cols = [f"{mask_expr(c, 't.' + quote_ident(c.name), KEY)} AS {quote_ident(c.name)}"
                if c.method else f"t.{quote_ident(c.name)}" for c in t.columns]
        return view, None, [f"CREATE VIEW {view} AS SELECT {', '.join(cols)} FROM {t.qualified} t"]
    names = {c.name for c in t.columns}
    flag = "pgwarden_masked"
    while flag in names:
        flag += "_"
    inner = f"{quote_ident(INNER_SCHEMA)}.r{t.relid}"
    roles = "'{" + ",".join(str(r) for r in sorted(mask_roles)) + "}'::pg_catalog.oid[]"
    # One InitPlan per statement (the security-barrier view is not flattened into the query):
    # masked in every session by role (session_user or current_user: SET ROLE and SECURITY
    # DEFINER cannot unmask), else this backend's attested decision (its row counts only with
    # this backend's own start: a pid reused after a missed exit is not attested), else the
    # decision for "unattested". Read by the view's owner: sessions cannot read the table.
    unattested = "true" if unattested_masked else "false"
    decision = (f"(SELECT pg_catalog.to_regrole(session_user::text)::pg_catalog.oid"
                f" OPERATOR(pg_catalog.=) ANY ({roles})"
                f" OR pg_catalog.to_regrole(current_user::text)::pg_catalog.oid"
                f" OPERATOR(pg_catalog.=) ANY ({roles})"
                " OR coalesce((SELECT a.masked FROM pgwarden.attested a"
                " WHERE a.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()"
                " AND a.backend_start OPERATOR(pg_catalog.=) (SELECT s.backend_start"
                " FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) s)),"
                f" {unattested}))")
    inner_cols = [f"t.{quote_ident(c.name)}" for c in t.columns] + [f"{decision} AS {flag}"]
    outer = [f"CASE WHEN d.{flag} THEN {mask_expr(c, 'd.' + quote_ident(c.name), KEY)}"
             f" ELSE d.{quote_ident(c.name)} END AS {quote_ident(c.name)}"
             if c.method else f"d.{quote_ident(c.name)}" for c in t.columns]
    return view, inner, [
        f"CREATE VIEW {inner} WITH (security_barrier) AS SELECT {', '.join(inner_cols)}"
        f" FROM {t.qualified} t",
        f"CREATE VIEW {view} AS SELECT {', '.join(outer)} FROM {inner} d"]


def signature(t: Table, family: str, mask_roles: list[int],
              unattested_masked: bool = True) -> str:
    doc = [family, t.schema, t.name, [[c.attnum, c.name, c.type, c.method, c.cls, c.value]
                                      for c in t.columns],
           [sorted(mask_roles), unattested_masked] if family == "gate" else [], 2]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:32]


# -- catalog access --------------------------------------------------------------------------------

_PLANS: dict[str, Any] = {}


def q(plpy: Any, sql: str, types: list[str] | None = None,
      args: list[Any] | None = None) -> list[dict[str, Any]]:
    if not types:
        return [dict(r) for r in plpy.execute(sql)]
    plan = _PLANS.get(sql)
    if plan is None:
        plan = _PLANS[sql] = plpy.prepare(sql, types)
    return [dict(r) for r in plpy.execute(plan, args)]


def tables(plpy: Any, relids: list[int], specs: dict[tuple[int, int], dict[str, Any]]) \
        -> dict[int, Table]:
    """The tables `relids` with every column, masked ones carrying their spec."""
    out: dict[int, Table] = {}
    for r in q(plpy, "SELECT c.oid::bigint AS relid, n.nspname::text AS schema,"
                     " c.relname::text AS name, c.relkind::text AS kind,"
                     " c.relowner::bigint AS owner, a.attnum, a.attname::text AS col,"
                     " pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,"
                     " ty.typcategory::text AS cat"
                     " FROM pg_catalog.pg_class c"
                     " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                     " JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
                     "  AND NOT a.attisdropped"
                     " JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid"
                     " WHERE c.oid = ANY($1) ORDER BY c.oid, a.attnum", ["oid[]"], [relids]):
        t = out.get(r["relid"])
        if t is None:
            t = out[r["relid"]] = Table(r["relid"], r["schema"], r["name"], r["kind"], r["owner"])
        s = specs.get((r["relid"], r["attnum"]))
        t.columns.append(Column(r["attnum"], r["col"], r["type"], r["cat"],
                                s["method"] if s else None, s["class"] if s else None,
                                s["value"] if s else None))
    return out


@dataclass
class State:
    """What masking should be (desired) or is (current)."""

    columns: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)       # roleid -> mode
    role_names: dict[int, str] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)       # identity_rules row
    missing: list[str] = field(default_factory=list)          # policy columns not found
    problems: list[str] = field(default_factory=list)         # must be fixed by a human

    def families(self) -> list[str]:
        return sorted({FAMILIES[m] for m in self.roles.values()})

    def mode_roles(self, mode: str) -> list[int]:
        return sorted(r for r, m in self.roles.items() if m == mode)


def desired(plpy: Any, doc: dict[str, Any]) -> State:
    m = doc.get("masking") or empty()
    st = State()
    wanted = [c for c in m["columns"] if c["method"] != "off"]
    if wanted:
        found = q(plpy,
                  "SELECT w.i, c.oid::bigint AS relid, a.attnum FROM"
                  " unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY w(s, t, col, i)"
                  " JOIN pg_catalog.pg_namespace n ON n.nspname = w.s"
                  " JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.t"
                  "  AND c.relkind IN ('r', 'p', 'm', 'f') AND NOT c.relispartition"
                  " JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = w.col"
                  "  AND a.attnum > 0 AND NOT a.attisdropped",
                  ["text[]", "text[]", "text[]"],
                  [[c["schema"] for c in wanted], [c["table"] for c in wanted],
                   [c["column"] for c in wanted]])
        hit = {r["i"]: r for r in found}
        for i, c in enumerate(wanted, start=1):
            if i not in hit:
                st.missing.append(f"{c['schema']}.{c['table']}.{c['column']}")
                continue
            method = c["method"] or DEFAULT_METHOD.get(c["class"] or "", "redact")
            st.columns[(hit[i]["relid"], hit[i]["attnum"])] = {
                "class": c["class"], "method": method, "value": c["value"]}
    roles = q(plpy, "SELECT oid::bigint AS oid, rolname::text AS name, rolsuper AS su"
                    " FROM pg_catalog.pg_roles WHERE rolname !~ '^(pg_|pgwarden_)'"
                    " ORDER BY rolname")
    for mode, globs in (("identity", m["shared_roles"]), ("role", m["mask"]["roles"])):
        for r in roles:
            if any(fnmatchcase(r["name"], g) for g in globs):
                if r["su"]:
                    st.problems.append(f"role {r['name']} is a superuser: superusers read "
                                       "everything, they cannot be masked")
                    continue
                st.roles[r["oid"]] = mode  # "role" last: masked in every session wins
                st.role_names[r["oid"]] = r["name"]
    st.rules = {"mask_identities": [glob_regex(g) for g in m["mask"]["identities"]],
                "unmask_identities": [glob_regex(g) for g in m["unmask"]["identities"]],
                "mask_roles": st.mode_roles("role"), "shared_roles": st.mode_roles("identity")}
    return st


def current(plpy: Any) -> State:
    st = State()
    for r in q(plpy, "SELECT relid::bigint AS relid, attnum, class, method, value"
                     " FROM pgwarden.mask_column"):
        st.columns[(r["relid"], r["attnum"])] = {"class": r["class"], "method": r["method"],
                                                 "value": r["value"]}
    for r in q(plpy, "SELECT m.roleid::bigint AS oid, m.mode, coalesce(r.rolname::text,"
                     " '#' || m.roleid) AS name FROM pgwarden.mask_role m"
                     " LEFT JOIN pg_catalog.pg_roles r ON r.oid = m.roleid"):
        st.roles[r["oid"]] = r["mode"]
        st.role_names[r["oid"]] = r["name"]
    row = q(plpy, "SELECT mask_identities, unmask_identities, mask_roles::bigint[] AS mr,"
                  " shared_roles::bigint[] AS sr FROM pgwarden.identity_rules")[0]
    st.rules = {"mask_identities": list(row["mask_identities"]),
                "unmask_identities": list(row["unmask_identities"]),
                "mask_roles": sorted(row["mr"]), "shared_roles": sorted(row["sr"])}
    return st


def relation_tree(plpy: Any, relids: list[int]) -> list[int]:
    """`relids` and every partition / inheritance descendant."""
    if not relids:
        return []
    return [r["oid"] for r in q(plpy,
        "WITH RECURSIVE t(oid) AS (SELECT unnest($1::oid[])"
        " UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN t ON i.inhparent = t.oid)"
        " SELECT oid::bigint AS oid FROM t", ["oid[]"], [relids])]


# -- the plan --------------------------------------------------------------------------------------

@dataclass
class Change:
    """One planned change: shown by plan (change, kind, object, detail), executed by apply
    (sql, in order), reported by drift when masking is not what the applied policy says."""

    change: str
    kind: str
    object: str
    detail: str
    sql: list[str] = field(default_factory=list)

    def row(self) -> dict[str, str]:
        return {"change": self.change, "kind": self.kind, "object": self.object,
                "detail": self.detail}


def changes(plpy: Any, doc: dict[str, Any], keep_current: bool = False) -> list[Change]:
    """Everything `apply` would do to make masking match `doc` (nothing is changed).

    keep_current: also keep masking what is masked now (by OID and attnum), whatever the
    policy's names say: what DDL does between two applies (a renamed column or table stays
    masked; the next plan shows the difference for a human to decide)."""
    want, have = desired(plpy, doc), current(plpy)
    if keep_current:
        want.columns = {**want.columns, **have.columns}
    out: list[Change] = []
    for p in want.problems:
        out.append(Change("!", "mask role", p.split()[1], p))
    for name in want.missing:
        out.append(Change("!", "mask column", name, "not in this database: nothing to mask"))
    relids = sorted({r for r, _ in want.columns} | {r for r, _ in have.columns})
    tabs = tables(plpy, relids, want.columns)
    old_tabs = tables(plpy, relids, have.columns)
    for key in sorted(set(want.columns) | set(have.columns)):
        a, b = have.columns.get(key), want.columns.get(key)
        t = tabs.get(key[0])
        col = next((c for c in t.columns if c.attnum == key[1]), None) if t else None
        name = t.display(col.name) if t and col else f"{key[0]}:{key[1]}"
        if a != b:
            sign = "+" if a is None else "-" if b is None else "~"
            detail = _spec(b) if a is None else _spec(a) if b is None else \
                f"{_spec(a)} -> {_spec(b)}"
            out.append(Change(sign, "mask column", name, detail))
    for oid in sorted(set(want.roles) | set(have.roles)):
        a, b = have.roles.get(oid), want.roles.get(oid)
        name = want.role_names.get(oid) or have.role_names.get(oid, str(oid))
        if a != b:
            sign = "+" if a is None else "-" if b is None else "~"
            what = {"role": "masked in every session", "identity": "shared: the attested "
                    "identity decides", None: "not governed"}
            detail = what[b] if a is None else what[a] if b is None else f"{what[a]} -> {what[b]}"
            out.append(Change(sign, "mask role", name, detail))
    for key in ("mask_identities", "unmask_identities"):
        if want.rules[key] != have.rules[key]:
            out.append(Change("~", "mask identities", key.split("_")[0],
                              f"{have.rules[key]} -> {want.rules[key]}"))
    views = _view_changes(plpy, want, tabs, old_tabs)
    fresh = {c.object for c in views if c.sql and c.change in ("+", "~")}
    out += views
    out += _role_changes(plpy, want, have, tabs, fresh)
    out += lockdown(plpy, want, tabs)
    return out


def _spec(s: dict[str, Any]) -> str:
    text = s["method"] + (f" ({s['class']})" if s.get("class") else "")
    return text + (f" {s['value']!r}" if s.get("value") is not None else "")


def _view_changes(plpy: Any, want: State, tabs: dict[int, Table],
                  old_tabs: dict[int, Table]) -> list[Change]:
    out: list[Change] = []
    have = {(r["relid"], r["family"]): r for r in q(plpy,
        "SELECT v.relid::bigint AS relid, v.family, v.signature, v.definition,"
        " v.view_oid::bigint AS view_oid, v.inner_oid::bigint AS inner_oid,"
        " c.oid IS NOT NULL AS exists, c.oid::regclass::text AS name,"
        " coalesce(md5(pg_catalog.pg_get_viewdef(c.oid)) = v.definition"
        "   AND c.relowner = 'pgwarden_mask_owner'::regrole, false) AS intact,"
        " v.inner_oid IS NULL OR EXISTS (SELECT FROM pg_catalog.pg_class i"
        "   WHERE i.oid = v.inner_oid AND i.relowner = 'pgwarden_mask_owner'::regrole)"
        "   AS inner_ok,"
        " EXISTS (SELECT FROM pg_catalog.pg_class i WHERE i.oid = v.inner_oid) AS inner_exists"
        " FROM pgwarden.mask_view v LEFT JOIN pg_catalog.pg_class c ON c.oid = v.view_oid")}
    mask_roles = want.mode_roles("role")
    unattested_masked = not any(re.match(rx, UNATTESTED) for rx in
                                want.rules["unmask_identities"])
    wanted: dict[tuple[int, str], Table] = {}
    for t in tabs.values():
        if t.masked:
            for fam in want.families():
                wanted[(t.relid, fam)] = t
    schemas_needed = sorted({family_schema(f, t.schema) for (_, f), t in wanted.items()})
    existing = {r["n"] for r in q(plpy, "SELECT nspname::text AS n FROM pg_catalog.pg_namespace"
                                        " WHERE nspname ~ '^pgwarden_(mask|gate|maskd)'")}
    if any(f == "gate" for _, f in wanted) and INNER_SCHEMA not in existing:
        out.append(Change("+", "mask schema", INNER_SCHEMA, "decision views (no access)",
                          [f"CREATE SCHEMA {INNER_SCHEMA} AUTHORIZATION {OWNER}",
                           f"REVOKE ALL ON SCHEMA {INNER_SCHEMA} FROM PUBLIC"]))
    for s in schemas_needed:
        if s not in existing:
            out.append(Change("+", "mask schema", s, "masking views",
                              [f"CREATE SCHEMA {quote_ident(s)} AUTHORIZATION {OWNER}",
                               f"REVOKE ALL ON SCHEMA {quote_ident(s)} FROM PUBLIC"]))
    for key in sorted(set(wanted) | set(have)):
        t, h = wanted.get(key), have.get(key)
        old = old_tabs.get(key[0])
        drop = []
        if h is not None and h["exists"]:
            drop.append(f"DROP VIEW IF EXISTS {h['name']}")
        if h is not None and h["inner_exists"]:
            drop.append(f"DROP VIEW IF EXISTS {INNER_SCHEMA}.r{key[0]}")
        drop.append(f"DELETE FROM pgwarden.mask_view WHERE relid = {int(key[0])}"
                    f" AND family = '{key[1]}'")
        if t is None:
            name = h["name"] or (old.display("") if old else str(key[0]))
            out.append(Change("-", "mask view", name.rstrip("."), f"{key[1]} view", drop))
            continue
        sig = signature(t, key[1], mask_roles, unattested_masked)
        view, inner, create = view_ddl(t, key[1], mask_roles, unattested_masked)
        if h is not None and h["exists"] and h["intact"] and h["inner_ok"] and \
                h["signature"] == sig:
            continue
        why = "create" if h is None else "recreate: " + (
            "missing" if not h["exists"] else "changed by someone else (definition or owner)"
            if not (h["intact"] and h["inner_ok"]) else "table or masking changed")
        sql = drop + create + [f"ALTER VIEW {v} OWNER TO {OWNER}" for v in (inner, view) if v]
        sql.append(_record_view_sql(t.relid, key[1], view, inner, sig))
        out.append(Change("+" if h is None else "~", "mask view", view,
                          f"{key[1]}: {why}; masks {', '.join(c.name for c in t.masked)}", sql))
    return out


def _role_changes(plpy: Any, want: State, have: State, tabs: dict[int, Table],
                  fresh: set[str]) -> list[Change]:
    """Grants on schemas and views (`fresh`: schemas and views this plan (re)creates, which
    have no grants yet), the view owner's grants on tables, search_path."""
    out: list[Change] = []
    masked_tabs = [t for t in tabs.values() if t.masked]
    for t in masked_tabs:
        missing = [p for p in ("SELECT", "INSERT", "UPDATE", "DELETE") if not q(plpy,
                   "SELECT pg_catalog.has_table_privilege('pgwarden_mask_owner', $1::oid, $2)"
                   " AS ok", ["oid", "text"], [t.relid, p])[0]["ok"]]
        if missing:
            out.append(Change("+", "mask grant", t.qualified,
                              f"{', '.join(missing)} to {OWNER} (reads for the views)",
                              [f"GRANT {', '.join(missing)} ON {t.qualified} TO {OWNER}"]))
    for oid, mode in sorted(want.roles.items()):
        role = quote_ident(want.role_names[oid])
        fam = FAMILIES[mode]
        schemas = sorted({family_schema(fam, t.schema) for t in masked_tabs})
        for s in schemas:
            if s in fresh or not _has(plpy, "schema", oid, s, "USAGE"):
                out.append(Change("+", "mask grant", s, f"USAGE to {want.role_names[oid]}",
                                  [f"GRANT USAGE ON SCHEMA {quote_ident(s)} TO {role}"]))
        for t in masked_tabs:
            view = f"{quote_ident(family_schema(fam, t.schema))}.{quote_ident(t.name)}"
            sql, detail = _view_grants(plpy, oid, role, t, view, view in fresh)
            if sql:
                out.append(Change("+", "mask grant", view, detail, sql))
        path = _search_path(plpy, oid, fam, {t.schema for t in masked_tabs})
        if path is not None:
            out.append(Change("~", "search_path", want.role_names[oid], f"{path[0]} -> {path[1]}",
                              path[2]))
    for oid in sorted(set(have.roles) - set(want.roles)):
        row = q(plpy, "SELECT search_path FROM pgwarden.mask_role WHERE roleid = $1", ["oid"],
                [oid])
        exists = q(plpy, "SELECT rolname::text AS n FROM pg_catalog.pg_roles WHERE oid = $1",
                   ["oid"], [oid])
        sql = [f"DELETE FROM pgwarden.mask_role WHERE roleid = {int(oid)}"]
        if exists:
            role = quote_ident(exists[0]["n"])
            sql.insert(0, _set_path_sql(role, row[0]["search_path"] if row else None))
            sql.insert(0, _set_sql(role, "jit", None))
            for s in q(plpy, "SELECT nspname::text AS n FROM pg_catalog.pg_namespace"
                             " WHERE nspname ~ '^pgwarden_(mask|gate)_'"):
                sql.insert(0, f"REVOKE ALL ON SCHEMA {quote_ident(s['n'])} FROM {role}")
        out.append(Change("-", "mask role", have.role_names[oid],
                          "released: search_path restored; base-table privileges revoked by "
                          "masking are not re-granted", sql))
    return out


def _set_sql(role: str, name: str, value: str | None) -> str:
    """ALTER ROLE ... IN DATABASE <this one> SET name = value (RESET when value is None)."""
    action = f"RESET {name}" if value is None else f"SET {name} = {value}"
    return (f"DO $x$ BEGIN EXECUTE pg_catalog.format('ALTER ROLE %s IN DATABASE %I {action}',"
            f" {_literal(role)}, current_database()); END $x$")


def _set_path_sql(role: str, value: str | None) -> str:
    if value is None:
        return (f"DO $x$ BEGIN EXECUTE pg_catalog.format('ALTER ROLE %s IN DATABASE %I RESET"
                f" search_path', {_literal(role)}, current_database()); END $x$")
    return (f"DO $x$ BEGIN EXECUTE pg_catalog.format('ALTER ROLE %s IN DATABASE %I SET"
            f" search_path = %s', {_literal(role)}, current_database(), {_literal(value)});"
            " END $x$")


def _has(plpy: Any, kind: str, role: int, obj: str, priv: str) -> bool:
    fn = {"schema": "has_schema_privilege", "table": "has_table_privilege"}[kind]
    return bool(q(plpy, f"SELECT pg_catalog.{fn}($1::oid, $2, $3) AS ok",
                  ["oid", "text", "text"], [role, obj, priv])[0]["ok"])


def _view_grants(plpy: Any, oid: int, role: str, t: Table, view: str,
                 fresh: bool) -> tuple[list[str], str]:
    """Grants `view` needs for role `oid`: SELECT when the role can read the table at all; INSERT
    and UPDATE on the unmasked columns it may write; DELETE if it may delete."""
    exists = None if fresh else q(plpy, "SELECT pg_catalog.to_regclass($1)::bigint AS v",
                                  ["text"], [view])[0]["v"]
    base = q(plpy,
             "SELECT pg_catalog.has_any_column_privilege($1::oid, $2::oid, 'SELECT') AS sel,"
             " pg_catalog.has_table_privilege($1::oid, $2::oid, 'DELETE') AS del,"
             " ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a"
             "  WHERE a.attrelid = $2 AND a.attnum > 0 AND NOT a.attisdropped"
             "  AND pg_catalog.has_column_privilege($1::oid, $2::oid, a.attnum, 'INSERT')"
             "  AND NOT a.attnum = ANY($3)) AS ins,"
             " ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a"
             "  WHERE a.attrelid = $2 AND a.attnum > 0 AND NOT a.attisdropped"
             "  AND pg_catalog.has_column_privilege($1::oid, $2::oid, a.attnum, 'UPDATE')"
             "  AND NOT a.attnum = ANY($3)) AS upd",
             ["oid", "oid", "int2[]"], [oid, t.relid, [c.attnum for c in t.masked]])[0]
    view_has = {}
    if exists:
        view_has = q(plpy,
                     "SELECT pg_catalog.has_table_privilege($1::oid, $2::oid, 'SELECT') AS sel,"
                     " pg_catalog.has_table_privilege($1::oid, $2::oid, 'DELETE') AS del,"
                     " ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a"
                     "  WHERE a.attrelid = $2 AND a.attnum > 0"
                     "  AND pg_catalog.has_column_privilege($1::oid, $2::oid, a.attnum,"
                     "  'INSERT')) AS ins,"
                     " ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a"
                     "  WHERE a.attrelid = $2 AND a.attnum > 0"
                     "  AND pg_catalog.has_column_privilege($1::oid, $2::oid, a.attnum,"
                     "  'UPDATE')) AS upd", ["oid", "oid"], [oid, exists])[0]
    readable = base["sel"] or bool(view_has.get("sel"))
    if not readable:
        return [], ""
    sql, what = [], []
    if not view_has.get("sel"):
        sql.append(f"GRANT SELECT ON {view} TO {role}")
        what.append("SELECT")
    for priv, cols in (("INSERT", base["ins"]), ("UPDATE", base["upd"])):
        need = [c for c in cols if c not in (view_has.get(priv.lower()[:3]) or [])]
        if need:
            sql.append(f"GRANT {priv} ({', '.join(quote_ident(c) for c in need)}) ON {view}"
                       f" TO {role}")
            what.append(f"{priv} ({', '.join(need)})")
    if base["del"] and not view_has.get("del"):
        sql.append(f"GRANT DELETE ON {view} TO {role}")
        what.append("DELETE")
    return sql, f"{', '.join(what)} to {role}"


def _search_path(plpy: Any, oid: int, family: str,
                 schemas: set[str]) -> tuple[str, str, list[str]] | None:
    """(old, new, sql) when the role's search_path in this database lacks the masking schemas
    in front of the schemas that hold masked tables; None when it is right."""
    rows = q(plpy,
             "SELECT (SELECT s FROM pg_catalog.pg_db_role_setting d, unnest(d.setconfig) s"
             "  WHERE d.setrole = $1 AND d.setdatabase = (SELECT oid FROM pg_catalog.pg_database"
             "  WHERE datname = current_database()) AND s LIKE 'search\\_path=%') AS own,"
             " (SELECT s FROM pg_catalog.pg_db_role_setting d, unnest(d.setconfig) s"
             "  WHERE d.setrole = $1 AND d.setdatabase = 0 AND s LIKE 'search\\_path=%') AS role,"
             " (SELECT s FROM pg_catalog.pg_db_role_setting d, unnest(d.setconfig) s"
             "  WHERE d.setrole = 0 AND d.setdatabase = (SELECT oid FROM pg_catalog.pg_database"
             "  WHERE datname = current_database()) AND s LIKE 'search\\_path=%') AS db,"
             " (SELECT search_path FROM pgwarden.mask_role WHERE roleid = $1) AS saved,"
             " EXISTS (SELECT FROM pgwarden.mask_role WHERE roleid = $1) AS known,"
             " EXISTS (SELECT FROM pg_catalog.pg_db_role_setting d, unnest(d.setconfig) s"
             "  WHERE d.setrole = $1 AND d.setdatabase = (SELECT oid FROM pg_catalog.pg_database"
             "  WHERE datname = current_database()) AND s LIKE 'jit=%') AS jit_set,"
             " (SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = $1) AS name",
             ["oid"], [oid])[0]
    own = rows["own"].split("=", 1)[1] if rows["own"] else None
    base_text = own or (rows["role"] or rows["db"] or "search_path=\"$user\", public").split(
        "=", 1)[1]
    parts = [p.strip() for p in _split_path(base_text)]
    plain = [p for p in parts if not re.match(r'^"?pgwarden_(mask|gate)_', p)]
    new: list[str] = []
    for p in plain:
        name = p[1:-1].replace('""', '"') if p.startswith('"') else p.lower()
        if name in schemas:
            new.append(quote_ident(family_schema(family, name)))
        new.append(p)
    new_text = ", ".join(new)
    role = quote_ident(rows["name"])
    mode = {"mask": "role", "gate": "identity"}[family]
    right = own is not None and _split_path(own) == new
    if right and rows["known"] and rows["jit_set"]:
        return None
    sql = [f"INSERT INTO pgwarden.mask_role (roleid, mode, search_path) VALUES ({int(oid)},"
           f" '{mode}', {_literal(own) if own is not None else 'NULL'})"
           f" ON CONFLICT (roleid) DO UPDATE SET mode = EXCLUDED.mode"]
    if not right:
        sql.append(_set_path_sql(role, new_text))
    if not rows["jit_set"]:
        # JIT compiling the masking expressions of a scan costs more than it saves (measured:
        # bench/mask_overhead.py); a jit setting of the role's own in this database is kept
        sql.append(_set_sql(role, "jit", "off"))
        new_text += "; jit off"
    return (own or f"({base_text} inherited)", new_text, sql)


def _split_path(text: str) -> list[str]:
    out, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [p.strip() for p in out if p.strip()]


# -- lock-down ----------------------------------------------------------------------------------

def lockdown(plpy: Any, want: State, tabs: dict[int, Table]) -> list[Change]:
    """Revocations that keep governed roles from reading masked columns in clear: base-table
    privileges, memberships reaching a role that reads them in clear (owners, superusers,
    pg_read_all_data, grantees, roles that may run a leaky SECURITY DEFINER function or read a
    leaky view), grants through PUBLIC, TEMP (roles masked in every session) and CREATE."""
    masked_tabs = [t for t in tabs.values() if t.masked]
    governed = dict(want.roles)
    if not masked_tabs or not governed:
        return []
    out: list[Change] = []
    names = want.role_names
    rels = relation_tree(plpy, [t.relid for t in masked_tabs])
    masked_names = {t.relid: [c.name for c in t.masked] for t in masked_tabs}
    # every relation of the trees, with the masked column names of its root
    tree = q(plpy,
             "WITH RECURSIVE t(oid, root) AS (SELECT r, r FROM unnest($1::oid[]) r"
             " UNION SELECT i.inhrelid, t.root FROM pg_catalog.pg_inherits i"
             " JOIN t ON i.inhparent = t.oid)"
             " SELECT t.oid::bigint AS oid, t.root::bigint AS root, c.relowner::bigint AS owner,"
             " c.oid::regclass::text AS name FROM t JOIN pg_catalog.pg_class c ON c.oid = t.oid",
             ["oid[]"], [[t.relid for t in masked_tabs]])
    cols = {r["oid"]: q(plpy, "SELECT attnum, attname::text AS name,"
                              " attname = ANY($2) AS masked FROM pg_catalog.pg_attribute"
                              " WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped"
                              " ORDER BY attnum", ["oid", "name[]"],
                        [r["oid"], masked_names[r["root"]]]) for r in tree}
    for r in tree:
        owner = r["owner"]
        if owner in governed:
            want.problems.append(f"role {names[owner]} owns {r['name']}: owners read their "
                                 "tables in clear; give the table to another role")
            out.append(Change("!", "lockdown", names[owner], f"owns {r['name']}: cannot be "
                              "masked (ALTER TABLE ... OWNER TO another role)"))
    # 1. privileges on the masked relations, of governed roles and PUBLIC
    grantees = list(governed) + [0]
    for r in tree:
        rel = r["name"]
        unmasked = [c["name"] for c in cols[r["oid"]] if not c["masked"]]
        masked = [c["name"] for c in cols[r["oid"]] if c["masked"]]
        acl = q(plpy, "SELECT a.grantee::bigint AS g, a.privilege_type AS p"
                      " FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a"
                      " WHERE c.oid = $1 AND a.grantee = ANY($2)", ["oid", "oid[]"],
                [r["oid"], grantees])
        colacl = q(plpy, "SELECT a.attname::text AS col, x.grantee::bigint AS g,"
                         " x.privilege_type AS p FROM pg_catalog.pg_attribute a,"
                         " pg_catalog.aclexplode(a.attacl) x WHERE a.attrelid = $1"
                         " AND a.attname = ANY($2) AND x.grantee = ANY($3)",
                   ["oid", "name[]", "oid[]"], [r["oid"], masked, grantees])
        for g in grantees:
            who = "PUBLIC" if g == 0 else quote_ident(names[g])
            label = "PUBLIC" if g == 0 else names[g]
            table_privs = {a["p"] for a in acl if a["g"] == g}
            narrow = ["SELECT", "REFERENCES"]
            if g != 0 and governed[g] == "role":
                narrow += ["INSERT", "UPDATE"]
            sql = []
            for p in narrow:
                if p in table_privs:
                    sql.append(f"REVOKE {p} ON {rel} FROM {who}")
                    if unmasked and p != "REFERENCES":
                        sql.append(f"GRANT {p} ({', '.join(quote_ident(c) for c in unmasked)})"
                                   f" ON {rel} TO {who}")
            if g != 0 and "TRIGGER" in table_privs:
                sql.append(f"REVOKE TRIGGER ON {rel} FROM {who}")
            col_privs = sorted({(a["col"], a["p"]) for a in colacl if a["g"] == g
                                and a["p"] in narrow})
            for col, p in col_privs:
                sql.append(f"REVOKE {p} ({quote_ident(col)}) ON {rel} FROM {who}")
            if sql:
                out.append(Change("-", "lockdown", f"{rel} ({label})",
                                  f"{label} could read masked columns "
                                  f"{', '.join(masked)} of {rel} in clear", sql))
    # 2. roles that read masked columns in clear, or hand that power on
    clear = _clear_roles(plpy, tree, cols, set(governed))
    for g in sorted(governed):
        for m in q(plpy, "SELECT m.roleid::bigint AS m, r.rolname::text AS name"
                         " FROM pg_catalog.pg_auth_members m"
                         " JOIN pg_catalog.pg_roles r ON r.oid = m.roleid WHERE m.member = $1",
                   ["oid"], [g]):
            reach = [c for c in clear if q(plpy,
                     "SELECT pg_catalog.pg_has_role($1::oid, $2::oid, 'MEMBER') AS ok",
                     ["oid", "oid"], [m["m"], c])[0]["ok"]]
            if reach:
                why = "; ".join(sorted({clear[c] for c in reach}))
                out.append(Change("-", "lockdown", f"{names[g]} in {m['name']}",
                                  f"membership reaches a role that reads in clear ({why})",
                                  [f"REVOKE {quote_ident(m['name'])} FROM "
                                   f"{quote_ident(names[g])}"]))
    # 3. leaky SECURITY DEFINER functions and views (through PUBLIC or direct grants)
    others = _other_roles(plpy, set(governed))
    temp_others = _other_roles(plpy, {g for g, m in governed.items() if m == "role"})
    for obj in _leaky_objects(plpy, tree, cols):
        kind, priv, ident = obj["kind"], obj["priv"], obj["ident"]
        public = obj["public"]
        direct = [g for g in governed if g in obj["grantees"]]
        sql = []
        if public:
            sql.append(f"REVOKE {priv} ON {kind} {ident} FROM PUBLIC")
            if others:
                sql.append(f"GRANT {priv} ON {kind} {ident} TO "
                           + ", ".join(quote_ident(o) for o in others))
        sql += [f"REVOKE {priv} ON {kind} {ident} FROM {quote_ident(names[g])}" for g in direct]
        if sql:
            who = (["PUBLIC (re-granted to every other role)"] if public else []) + \
                [names[g] for g in direct]
            out.append(Change("-", "lockdown", f"{kind.lower()} {ident}",
                              f"{obj['why']}: {priv} taken from {', '.join(who)}", sql))
    # 4. TEMP on the database (roles masked in every session) and CREATE on schemas
    role_mode = [g for g, m in governed.items() if m == "role"]
    if role_mode:
        db = q(plpy, "SELECT d.datname::text AS name, d.datacl IS NULL AS dflt,"
                     " ARRAY(SELECT a.grantee::bigint FROM pg_catalog.aclexplode(d.datacl) a"
                     "  WHERE a.privilege_type = 'TEMPORARY') AS temp"
                     " FROM pg_catalog.pg_database d WHERE d.datname = current_database()")[0]
        dbname = quote_ident(db["name"])
        sql = []
        if db["dflt"] or 0 in db["temp"]:
            sql.append(f"REVOKE TEMPORARY ON DATABASE {dbname} FROM PUBLIC")
            if temp_others:
                sql.append(f"GRANT TEMPORARY ON DATABASE {dbname} TO "
                           + ", ".join(quote_ident(o) for o in temp_others))
        sql += [f"REVOKE TEMPORARY ON DATABASE {dbname} FROM {quote_ident(names[g])}"
                for g in role_mode if g in db["temp"]]
        if sql:
            out.append(Change("-", "lockdown", f"database {db['name']} TEMPORARY",
                              "roles masked in every session may not create temporary objects "
                              "(kept for every other role)", sql))
    for r in q(plpy, "SELECT n.nspname::text AS s, a.grantee::bigint AS g"
                     " FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a"
                     " WHERE a.privilege_type = 'CREATE' AND a.grantee = ANY($1)"
                     " ORDER BY 1, 2", ["oid[]"], [list(governed)]):
        out.append(Change("-", "lockdown", f"schema {r['s']} CREATE ({names[r['g']]})",
                          "governed roles may not create objects",
                          [f"REVOKE CREATE ON SCHEMA {quote_ident(r['s'])} FROM "
                           f"{quote_ident(names[r['g']])}"]))
    return out


def _clear_roles(plpy: Any, tree: list[dict[str, Any]], cols: dict[int, list[dict[str, Any]]],
                 governed: set[int]) -> dict[int, str]:
    """Roles (not governed) that read masked columns in clear, or may run something that does
    for them: role oid -> why."""
    out: dict[int, str] = {}
    for r in q(plpy, "SELECT oid::bigint AS oid, rolname::text AS n FROM pg_catalog.pg_roles"
                     " WHERE rolsuper OR rolname = ANY($1)", ["name[]"], [list(DANGEROUS_ROLES)]):
        out[r["oid"]] = f"{r['n']} is a superuser" if r["n"] not in DANGEROUS_ROLES else r["n"]
    for r in tree:
        if r["owner"] not in governed:
            out.setdefault(r["owner"], f"owns {r['name']}")
        masked = [c["attnum"] for c in cols[r["oid"]] if c["masked"]]
        for g in q(plpy, "SELECT DISTINCT x.grantee::bigint AS g FROM pg_catalog.pg_class c,"
                         " pg_catalog.aclexplode(c.relacl) x WHERE c.oid = $1"
                         " AND x.privilege_type = 'SELECT' AND x.grantee <> 0"
                         " UNION SELECT x.grantee FROM pg_catalog.pg_attribute a,"
                         " pg_catalog.aclexplode(a.attacl) x WHERE a.attrelid = $1"
                         " AND a.attnum = ANY($2) AND x.privilege_type = 'SELECT'"
                         " AND x.grantee <> 0", ["oid", "int2[]"], [r["oid"], masked]):
            if g["g"] not in governed:
                out.setdefault(g["g"], f"may read {r['name']}")
    for obj in _leaky_objects(plpy, tree, cols):
        for g in obj["grantees"]:
            if g not in governed:
                out.setdefault(g, f"may use {obj['kind'].lower()} {obj['ident']}")
    return out


def _leaky_objects(plpy: Any, tree: list[dict[str, Any]],
                   cols: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """SECURITY DEFINER functions whose owner reads masked columns in clear, and views and
    materialized views (not pgwarden's) over masked columns whose owner does: what they return
    is not masked, whoever calls them."""
    rels = [r["oid"] for r in tree]
    masked = [[r["oid"], c["attnum"]] for r in tree for c in cols[r["oid"]] if c["masked"]]
    if not rels:
        return []
    clear_check = ("EXISTS (SELECT FROM unnest($1::oid[], $2::int2[]) m(rel, att)"
                   " WHERE pg_catalog.has_column_privilege({owner}, m.rel, m.att, 'SELECT'))")
    out = []
    for r in q(plpy,
               "SELECT p.oid::regprocedure::text AS ident, p.proacl IS NULL AS dflt,"
               " ARRAY(SELECT x.grantee::bigint FROM pg_catalog.aclexplode(p.proacl) x"
               "  WHERE x.privilege_type = 'EXECUTE') AS grantees"
               " FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
               " WHERE p.prosecdef AND n.nspname <> ALL ($3) AND n.nspname !~ '^pg_'"
               " AND " + clear_check.format(owner="p.proowner"),
               ["oid[]", "int2[]", "name[]"],
               [[m[0] for m in masked], [m[1] for m in masked], list(_SYSTEM_SCHEMAS)]):
        public = r["dflt"] or 0 in r["grantees"]
        out.append({"kind": "FUNCTION", "priv": "EXECUTE", "ident": r["ident"],
                    "public": public, "grantees": [g for g in r["grantees"] if g],
                    "why": "SECURITY DEFINER function whose owner reads masked columns"})
    for r in q(plpy,
               "WITH RECURSIVE dep(v) AS ("
               "  SELECT DISTINCT w.ev_class FROM pg_catalog.pg_depend d"
               "  JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid"
               "  WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass"
               "  AND d.refclassid = 'pg_catalog.pg_class'::regclass"
               "  AND w.ev_class <> d.refobjid AND d.refobjid = ANY($1)"
               "  AND (d.refobjsubid = 0 OR (d.refobjid, d.refobjsubid) IN"
               "       (SELECT * FROM unnest($1::oid[], $2::int2[])))"
               " UNION SELECT w.ev_class FROM dep JOIN pg_catalog.pg_depend d"
               "  ON d.refobjid = dep.v AND d.refclassid = 'pg_catalog.pg_class'::regclass"
               "  AND d.classid = 'pg_catalog.pg_rewrite'::regclass"
               "  JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid AND w.ev_class <> dep.v)"
               " SELECT c.oid::regclass::text AS ident, c.relkind::text AS kind,"
               " ARRAY(SELECT x.grantee::bigint FROM pg_catalog.aclexplode(c.relacl) x"
               "  WHERE x.privilege_type = 'SELECT') AS grantees"
               " FROM dep JOIN pg_catalog.pg_class c ON c.oid = dep.v"
               " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
               " WHERE n.nspname !~ '^pgwarden' AND c.relowner <> 'pgwarden_mask_owner'::regrole"
               " AND " + clear_check.format(owner="c.relowner"),
               ["oid[]", "int2[]"], [[m[0] for m in masked], [m[1] for m in masked]]):
        out.append({"kind": "TABLE", "priv": "SELECT", "ident": r["ident"],
                    "public": 0 in r["grantees"], "grantees": [g for g in r["grantees"] if g],
                    "why": ("materialized view" if r["kind"] == "m" else "view")
                    + " over masked columns, read with its owner's privileges"})
    return out


def _other_roles(plpy: Any, governed: set[int]) -> list[str]:
    """Every login role but the governed ones, superusers and pgwarden's own: those that keep a
    privilege masking takes away from PUBLIC (group roles get nothing: their members do)."""
    return [r["n"] for r in q(plpy, "SELECT rolname::text AS n, oid::bigint AS oid"
                                    " FROM pg_catalog.pg_roles WHERE NOT rolsuper"
                                    " AND rolcanlogin AND rolname !~ '^(pg_|pgwarden_)'"
                                    " ORDER BY 1")
            if r["oid"] not in governed]


# -- apply -----------------------------------------------------------------------------------------

def apply(plpy: Any, GD: dict[str, Any], doc: dict[str, Any]) -> list[dict[str, str]]:
    """Make masking match `doc`, in the caller's transaction; returns the changes made."""
    plan = changes(plpy, doc)
    blocking = [c for c in plan if c.change == "!" and c.kind != "mask column"]
    if blocking:
        raise MaskError("masking cannot be enforced: " + "; ".join(c.detail for c in blocking))
    want = desired(plpy, doc)
    busy = _busy(GD)
    busy[0] = True
    try:
        plpy.execute("DELETE FROM pgwarden.mask_column")
        for (relid, attnum), s in sorted(want.columns.items()):
            q(plpy, "INSERT INTO pgwarden.mask_column (relid, attnum, class, method, value)"
                    " VALUES ($1, $2, $3, $4, $5)", ["oid", "int2", "text", "text", "text"],
              [relid, attnum, s["class"], s["method"], s["value"]])
        _write_rules(plpy, want)
        for c in plan:
            for sql in c.sql:
                plpy.execute(sql)
        plpy.execute("DELETE FROM pgwarden.mask_role m WHERE NOT m.roleid = ANY ("
                     "SELECT unnest(mask_roles || shared_roles) FROM pgwarden.identity_rules)")
        _drop_unused_schemas(plpy)
    finally:
        busy[0] = False
    return [c.row() for c in plan]


def _write_rules(plpy: Any, want: State) -> None:
    masked_cols = []
    if want.columns:
        tabs = tables(plpy, sorted({r for r, _ in want.columns}), want.columns)
        masked_cols = sorted(t.display(c.name) for t in tabs.values() for c in t.masked)
    q(plpy, "UPDATE pgwarden.identity_rules SET mask_identities = $1, unmask_identities = $2,"
            " mask_roles = $3, shared_roles = $4, masked_columns = $5",
      ["text[]", "text[]", "oid[]", "oid[]", "text[]"],
      [want.rules["mask_identities"], want.rules["unmask_identities"],
       want.rules["mask_roles"], want.rules["shared_roles"], masked_cols])
    plpy.execute("UPDATE pgwarden.attested SET masked = pgwarden._identity_masks(identity)")


def _drop_unused_schemas(plpy: Any) -> None:
    for r in q(plpy, "SELECT n.nspname::text AS n FROM pg_catalog.pg_namespace n"
                     " WHERE n.nspname ~ '^pgwarden_(mask|gate)_|^pgwarden_maskd$'"
                     " AND n.nspowner = 'pgwarden_mask_owner'::regrole"
                     " AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c"
                     "                 WHERE c.relnamespace = n.oid)"):
        plpy.execute(f"DROP SCHEMA {quote_ident(r['n'])}")


def _record_view_sql(relid: int, family: str, view: str, inner: str | None, sig: str) -> str:
    v = _literal(view) + "::pg_catalog.regclass"
    i = _literal(inner) + "::pg_catalog.regclass" if inner else "NULL"
    return ("INSERT INTO pgwarden.mask_view (relid, family, view_oid, inner_oid, signature,"
            f" definition) VALUES ({int(relid)}, {_literal(family)}, {v}, {i}, {_literal(sig)},"
            f" md5(pg_catalog.pg_get_viewdef({v}))) ON CONFLICT (relid, family) DO UPDATE"
            " SET view_oid = EXCLUDED.view_oid, inner_oid = EXCLUDED.inner_oid,"
            " signature = EXCLUDED.signature, definition = EXCLUDED.definition")


def _busy(GD: dict[str, Any]) -> list[bool]:
    return GD.setdefault("pgwarden_mask_busy", [False])


def applied_doc(plpy: Any) -> dict[str, Any] | None:
    rows = q(plpy, "SELECT p.doc::text AS doc FROM pgwarden.policy p"
                   " JOIN pgwarden.policy_head h ON h.version = p.version")
    return json.loads(rows[0]["doc"]) if rows else None


# -- DDL: keep views in step with their tables -----------------------------------------------------

def on_ddl_start(plpy: Any, GD: dict[str, Any], tag: str, query: str) -> None:
    """Drop the views of masked tables the command may alter or drop (every masked table when
    the text does not show which: a DO block, a function). Recreated by `on_ddl_end`."""
    if _busy(GD)[0]:
        return
    views = q(plpy, "SELECT v.relid::bigint AS relid, c.relname::text AS name,"
                    " v.view_oid::regclass::text AS v, v.inner_oid::regclass::text AS i"
                    " FROM pgwarden.mask_view v JOIN pg_catalog.pg_class c ON c.oid = v.relid"
                    " WHERE EXISTS (SELECT FROM pg_catalog.pg_class x WHERE x.oid = v.view_oid)")
    text = (query or "").lower()
    plain = re.match(r"\s*(alter|drop)\b", text) is not None and ";" not in text.strip().rstrip(";")
    busy = _busy(GD)
    busy[0] = True
    try:
        for v in views:
            if plain and not re.search(r"(^|[^a-z0-9_$])" + re.escape(v["name"].lower())
                                       + r"($|[^a-z0-9_$])", text):
                continue
            plpy.execute(f"DROP VIEW IF EXISTS {v['v']}")
            if v["i"]:
                plpy.execute(f"DROP VIEW IF EXISTS {v['i']}")
    finally:
        busy[0] = False


# Commands after which views, grants or lock-down may need work (DROP: see on_sql_drop; role
# memberships, role settings and database privileges fire no event trigger: apply and drift).
RELEVANT_TAGS = frozenset({
    "CREATE TABLE", "CREATE TABLE AS", "SELECT INTO", "ALTER TABLE", "CREATE VIEW",
    "ALTER VIEW", "CREATE MATERIALIZED VIEW", "ALTER MATERIALIZED VIEW", "CREATE FOREIGN TABLE",
    "ALTER FOREIGN TABLE", "CREATE FUNCTION", "ALTER FUNCTION", "CREATE PROCEDURE",
    "ALTER PROCEDURE", "GRANT", "REVOKE", "ALTER SCHEMA", "CREATE RULE", "ALTER DEFAULT PRIVILEGES",
    "IMPORT FOREIGN SCHEMA"})


def on_ddl_end(plpy: Any, GD: dict[str, Any], commands: str, tag: str) -> str | None:
    """Recreate missing or stale views (table changed), mask new tables the policy names,
    re-apply the lock-down a GRANT or a new SECURITY DEFINER function re-opened (with a
    NOTICE), refuse changes to masking objects by anyone but pgwarden admins (theirs are
    repaired at once)."""
    if _busy(GD)[0]:
        return None
    cmds = json.loads(commands or "[]")
    for c in cmds:
        if c["schema"] and re.match(r"^pgwarden_(mask|gate)_|^pgwarden_maskd$", c["schema"]) \
                and c["tag"] not in ("GRANT", "REVOKE"):
            admin = q(plpy, "SELECT pg_catalog.pg_has_role(session_user, 'pgwarden_admin',"
                            " 'MEMBER') AS a")[0]["a"]
            if not admin:
                return json.dumps({
                    "sqlstate": "PW001", "rule": "guard_integrity", "schema": c["schema"],
                    "table": "", "message": f"pgwarden: {c['tag']} on {c['identity']} refused "
                    "(rule guard_integrity): masking views belong to pgwarden",
                    "detail": "masking views are generated by pgwarden policy apply",
                    "hint": "change the masking section of pgwarden.yaml instead"})
    if not any(c["tag"] in RELEVANT_TAGS for c in cmds):
        return None
    doc = applied_doc(plpy)
    if doc is None or not (doc.get("masking") or {}).get("columns"):
        return None
    plan = [c for c in changes(plpy, doc, keep_current=True)
            if c.kind in ("mask view", "mask schema", "mask grant", "lockdown")
            or (c.kind == "mask column" and c.change == "+")]
    if not any(c.sql or c.kind == "mask column" for c in plan):
        return None
    busy = _busy(GD)
    busy[0] = True
    try:
        want = desired(plpy, doc)
        want.columns = {**want.columns, **current(plpy).columns}
        for (relid, attnum), s in want.columns.items():
            q(plpy, "INSERT INTO pgwarden.mask_column (relid, attnum, class, method, value)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (relid, attnum) DO NOTHING",
              ["oid", "int2", "text", "text", "text"],
              [relid, attnum, s["class"], s["method"], s["value"]])
        for c in plan:
            for sql in c.sql:
                plpy.execute(sql)
            if c.kind == "lockdown" and c.sql:
                plpy.notice(f"pgwarden: masking lock-down: {c.object}: {c.detail}")
        if any(c.kind == "mask column" for c in plan):
            _write_rules(plpy, want)
    finally:
        busy[0] = False
    return None


def on_sql_drop(plpy: Any, GD: dict[str, Any], objects: str) -> str | None:
    """Forget dropped masked tables and columns; refuse dropping masking views by anyone but
    pgwarden (admins' drops are repaired by the next apply and reported by drift)."""
    objs = json.loads(objects or "[]")
    if _busy(GD)[0]:
        return None
    ours = [o for o in objs if o["schema"] and re.match(
        r"^pgwarden_(mask|gate)_|^pgwarden_maskd$", o["schema"]) and o["original"]]
    if ours:
        admin = q(plpy, "SELECT pg_catalog.pg_has_role(session_user, 'pgwarden_admin',"
                        " 'MEMBER') AS a")[0]["a"]
        if not admin:
            o = ours[0]
            return json.dumps({
                "sqlstate": "PW001", "rule": "guard_integrity", "schema": o["schema"],
                "table": o["name"] or "", "message": f"pgwarden: DROP of {o['identity']} "
                "refused (rule guard_integrity): masking views belong to pgwarden",
                "detail": "masking views are generated by pgwarden policy apply",
                "hint": "change the masking section of pgwarden.yaml instead"})
    rels = [o["objid"] for o in objs if o["classid"] == "pg_class" and not o["objsubid"]]
    cols = [(o["objid"], o["objsubid"]) for o in objs if o["classid"] == "pg_class"
            and o["objsubid"]]
    q(plpy, "DELETE FROM pgwarden.mask_column WHERE relid = ANY($1)"
            " OR (relid, attnum) IN (SELECT * FROM unnest($2::oid[], $3::int2[]))",
      ["oid[]", "oid[]", "int2[]"], [rels, [c[0] for c in cols], [c[1] for c in cols]])
    q(plpy, "DELETE FROM pgwarden.mask_view WHERE relid = ANY($1) OR view_oid = ANY($1)",
      ["oid[]"], [rels])
    return None


def unmask_all(plpy: Any, GD: dict[str, Any]) -> int:
    """Remove masking: views, schemas, governed roles' search_path (uninstall)."""
    busy = _busy(GD)
    busy[0] = True
    try:
        n = 0
        for r in q(plpy, "SELECT m.roleid::bigint AS oid, m.search_path, r.rolname::text AS n"
                         " FROM pgwarden.mask_role m JOIN pg_catalog.pg_roles r"
                         " ON r.oid = m.roleid"):
            plpy.execute(_set_path_sql(quote_ident(r["n"]), r["search_path"]))
            plpy.execute(_set_sql(quote_ident(r["n"]), "jit", None))
            n += 1
        for r in q(plpy, "SELECT nspname::text AS n FROM pg_catalog.pg_namespace"
                         " WHERE nspname ~ '^pgwarden_(mask|gate)_|^pgwarden_maskd$'"
                         " ORDER BY nspname ~ '^pgwarden_maskd$'"):
            plpy.execute(f"DROP SCHEMA {quote_ident(r['n'])} CASCADE")
        for t in ("mask_view", "mask_column", "mask_role"):
            plpy.execute(f"DELETE FROM pgwarden.{t}")
        plpy.execute("UPDATE pgwarden.identity_rules SET mask_roles = '{}', shared_roles = '{}',"
                     " masked_columns = '{}'")
    finally:
        busy[0] = False
    return n


# -- drift -----------------------------------------------------------------------------------------

EXPECTED_FUNCTION_GRANTS = {  # function -> roles (besides pgwarden_admin) that may execute it
    "attest": ("pgwarden_agent",),
    "_mask_active": ("PUBLIC",),
    "_mask_ddl_start": ("PUBLIC",), "_mask_ddl_end": ("PUBLIC",), "_mask_sql_drop": ("PUBLIC",),
    "mask_email": ("PUBLIC",), "mask_name": ("PUBLIC",),
    "mask_tail": ("PUBLIC",), "mask_initial": ("PUBLIC",), "mask_pseudonym": ("PUBLIC",),
}
EXPECTED_TABLE_GRANTS = {"attested": ("pgwarden_mask_owner",),
                         "identity_rules": ("pgwarden_mask_owner",),
                         "mask_key": ("pgwarden_mask_owner",)}


def drift_findings(plpy: Any) -> list[dict[str, str]]:
    """Masking findings that `apply` cannot repair (the rest shows up as changes the applied
    policy would make, see `changes`): problems that need a human, and the agent's role."""
    out = []
    doc = applied_doc(plpy)
    if doc and (doc.get("masking") or {}).get("columns"):
        want = desired(plpy, doc)
        for p in want.problems:
            out.append({"severity": "high", "kind": "masking", "object": p.split()[1],
                        "detail": p})
        tabs = tables(plpy, sorted({r for r, _ in want.columns}), want.columns)
        tree = relation_tree(plpy, list(tabs))
        for r in q(plpy, "SELECT c.oid::regclass::text AS rel, r.rolname::text AS owner"
                         " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r"
                         " ON r.oid = c.relowner WHERE c.oid = ANY($1) AND c.relowner = ANY($2)",
                   ["oid[]", "oid[]"], [tree, list(want.roles)]):
            out.append({"severity": "high", "kind": "masking", "object": r["rel"],
                        "detail": f"owned by masked role {r['owner']}: it reads in clear"})
    for r in q(plpy, "SELECT r.rolname::text AS n, r.rolsuper OR r.rolcreaterole"
                     " OR r.rolcreatedb OR r.rolbypassrls AS attrs,"
                     " ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_auth_members m"
                     "  JOIN pg_catalog.pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid)"
                     "  AS member_of FROM pg_catalog.pg_roles r"
                     " WHERE r.rolname = 'pgwarden_agent'"):
        if r["attrs"] or r["member_of"]:
            out.append({"severity": "medium", "kind": "agent_role", "object": "pgwarden_agent",
                        "detail": "the agent's role should only log in and call pgwarden.attest"
                                  f" (attributes or memberships: {r['member_of']})"})
    return out

"""Policy plan and apply: patterns -> objects -> guard triggers, and the exact diff.

The desired state of a policy is computed from the catalog: every relation, schema and function
matching a protect entry's globs (first entry wins), every partition and inheritance child of a
guarded relation (same entry), and every column named in ``columns`` of a guarded table. Tables
(plain and partitioned) get guard triggers, all ``ENABLE ALWAYS`` (so
``session_replication_role = replica`` does not skip them) and named ``zz_pgwarden_*`` (AFTER
triggers of one kind fire in name order, so the guard sees what user triggers did):

    zz_pgwarden_update    AFTER UPDATE  FOR EACH STATEMENT, REFERENCING OLD TABLE AS pgwarden_old
    zz_pgwarden_delete    AFTER DELETE  FOR EACH STATEMENT, REFERENCING OLD TABLE AS pgwarden_old
    zz_pgwarden_truncate  BEFORE TRUNCATE FOR EACH STATEMENT
    zz_pgwarden_columns   BEFORE UPDATE OF <protected columns> FOR EACH ROW (plain tables and
                          partitions; the arguments are the column names)

`changes` compares that with what ``pgwarden.protected``, ``protected_column``, ``guard_trigger``
and ``pg_trigger`` hold (missing or disabled guard triggers are repaired), and the applied
document with the new one rule by rule. `apply_policy` executes the same changes in the
caller's transaction: atomic, nothing changes when anything fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pgwarden_ext import ledger, mask, state
from pgwarden_ext.policy import Compiled, PolicyError, glob_match

TRIGGERED_KINDS = ("r", "p")
_USER_SCHEMAS = ("n.nspname NOT IN ('pg_catalog', 'information_schema')"
                 " AND n.nspname !~ '^pgwarden' AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'")


@dataclass(frozen=True)
class Claim:
    """One object a protect entry guards. classid: pg_class | pg_namespace | pg_proc."""

    classid: str
    objid: int
    protect: str
    via: str  # policy | pattern | partition | inheritance
    identity: str
    kind: str = ""  # relkind for relations


def desired(plpy: Any, compiled: Compiled) -> tuple[dict[tuple[str, int], Claim],
                                                     dict[int, dict[int, str]]]:
    """(claims by (classid, objid), protected columns: relid -> {attnum: name})."""
    claims: dict[tuple[str, int], Claim] = {}
    rels = plpy.execute(
        "SELECT c.oid::bigint AS oid, n.nspname::text AS schema, c.relname::text AS name,"
        " c.relkind::text AS kind, pg_catalog.format('%I.%I', n.nspname, c.relname) AS ident"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relpersistence <> 't' AND "
        + _USER_SCHEMAS + " ORDER BY 2, 3")
    for entry in compiled.doc["protect"]:
        for r in rels:
            key = ("pg_class", r["oid"])
            if key not in claims and any(glob_match(p, r["schema"], r["name"])
                                         for p in entry["tables"]):
                claims[key] = Claim("pg_class", r["oid"], entry["name"], "policy", r["ident"],
                                    r["kind"])
    by_oid = {r["oid"]: r for r in rels}
    children: dict[int, list[int]] = {}
    for r in plpy.execute("SELECT inhrelid::bigint AS c, inhparent::bigint AS p"
                          " FROM pg_catalog.pg_inherits ORDER BY 1"):
        children.setdefault(r["p"], []).append(r["c"])
    queue = [c for c in claims.values() if c.classid == "pg_class"]
    while queue:
        parent = queue.pop()
        for child in children.get(parent.objid, []):
            key = ("pg_class", child)
            if key not in claims and child in by_oid:
                r = by_oid[child]
                via = "partition" if parent.kind == "p" else "inheritance"
                claims[key] = Claim("pg_class", child, parent.protect, via, r["ident"], r["kind"])
                queue.append(claims[key])
    for entry in compiled.doc["protect"]:
        if entry["schemas"]:
            for r in plpy.execute("SELECT n.oid::bigint AS oid, n.nspname::text AS name"
                                  " FROM pg_catalog.pg_namespace n WHERE " + _USER_SCHEMAS):
                key = ("pg_namespace", r["oid"])
                if key not in claims and any(fnmatchcase(r["name"], p) for p in entry["schemas"]):
                    claims[key] = Claim("pg_namespace", r["oid"], entry["name"], "policy",
                                        r["name"])
        if entry["functions"]:
            for r in plpy.execute(
                    "SELECT p.oid::bigint AS oid, n.nspname::text AS schema,"
                    " p.proname::text AS name, p.oid::regprocedure::text AS ident"
                    " FROM pg_catalog.pg_proc p"
                    " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE "
                    + _USER_SCHEMAS):
                key = ("pg_proc", r["oid"])
                if key not in claims and any(glob_match(p, r["schema"], r["name"])
                                             for p in entry["functions"]):
                    claims[key] = Claim("pg_proc", r["oid"], entry["name"], "policy", r["ident"])
    columns: dict[int, dict[int, str]] = {}
    wanted = {e["name"]: e["columns"] for e in compiled.doc["protect"]}
    tables = [c for c in claims.values() if c.classid == "pg_class" and c.kind in TRIGGERED_KINDS]
    for t in tables:
        if wanted[t.protect]:
            for r in plpy.execute(plpy.prepare(
                    "SELECT attnum, attname::text FROM pg_catalog.pg_attribute"
                    " WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped"
                    " AND attname = ANY($2) ORDER BY attnum", ["oid", "name[]"]),
                    [t.objid, wanted[t.protect]]):
                columns.setdefault(t.objid, {})[r["attnum"]] = r["attname"]
    return claims, columns


def current(plpy: Any) -> tuple[dict[tuple[str, int], Claim], dict[int, dict[int, str]]]:
    """What pgwarden guards now, in the shape of `desired`."""
    claims = {}
    for r in plpy.execute(
            "SELECT p.classid::text AS classid, p.objid::bigint AS objid, p.protect, p.via,"
            " p.identity, coalesce(c.relkind::text, '') AS kind FROM pgwarden.protected p"
            " LEFT JOIN pg_catalog.pg_class c"
            "   ON p.classid = 'pg_catalog.pg_class'::regclass AND c.oid = p.objid"):
        claims[(r["classid"], r["objid"])] = Claim(r["classid"], r["objid"], r["protect"],
                                                   r["via"], r["identity"], r["kind"])
    columns: dict[int, dict[int, str]] = {}
    for r in plpy.execute(
            "SELECT pc.relid::bigint AS relid, pc.attnum, a.attname::text"
            " FROM pgwarden.protected_column pc JOIN pg_catalog.pg_attribute a"
            "   ON a.attrelid = pc.relid AND a.attnum = pc.attnum"):
        columns.setdefault(r["relid"], {})[r["attnum"]] = r["attname"]
    return claims, columns


def trigger_problems(plpy: Any, claims: dict[tuple[str, int], Claim],
                     columns: dict[int, dict[int, str]]) -> dict[int, list[str]]:
    """relid -> guard trigger kinds that are missing, disabled or stale on guarded tables."""
    have: dict[int, dict[str, Any]] = {}
    for r in plpy.execute(
            "SELECT g.relid::bigint AS relid, g.kind, t.tgenabled::text AS enabled,"
            " t.tgattr::text AS attrs FROM pgwarden.guard_trigger g"
            " LEFT JOIN pg_catalog.pg_trigger t ON t.oid = g.tgoid"):
        have.setdefault(r["relid"], {})[r["kind"]] = r
    out: dict[int, list[str]] = {}
    for c in claims.values():
        if c.classid != "pg_class" or c.kind not in TRIGGERED_KINDS:
            continue
        for kind, attnums in wanted_triggers(c.kind, columns.get(c.objid, {})).items():
            t = have.get(c.objid, {}).get(kind)
            ok = t is not None and t["enabled"] == "A" and (
                attnums is None or t["attrs"] == " ".join(map(str, attnums)))
            if not ok:
                out.setdefault(c.objid, []).append(kind)
    return out


def wanted_triggers(relkind: str, cols: dict[int, str]) -> dict[str, list[int] | None]:
    """Guard trigger kinds a relation needs: kind -> column attnums (columns trigger) or None."""
    kinds: dict[str, list[int] | None] = {"update": None, "delete": None, "truncate": None}
    if relkind == "r" and cols:
        kinds["columns"] = sorted(cols)
    return kinds


def changes(plpy: Any, GD: dict[str, Any], doc: dict[str, Any]) -> list[dict[str, str]]:
    """The exact diff between what is enforced and what `doc` asks for (see `apply_policy`),
    masking included (mask.changes)."""
    compiled = Compiled(doc)
    return _diff(plpy, GD, compiled)[0] + _mask_rows(mask.changes, plpy, doc)


def _mask_rows(fn: Any, *args: Any) -> list[dict[str, str]]:
    try:
        result = fn(*args)
    except mask.MaskError as e:
        raise PolicyError(str(e)) from None
    return [c if isinstance(c, dict) else c.row() for c in result]


def _diff(plpy: Any, GD: dict[str, Any], new: Compiled) -> tuple[list[dict[str, str]], Any]:
    want, want_cols = desired(plpy, new)
    have, have_cols = current(plpy)
    out: list[dict[str, str]] = []
    old_doc = _applied_doc(plpy)
    for key in sorted(set(flat(old_doc)) | set(flat(new.doc))):
        a, b = flat(old_doc).get(key), flat(new.doc).get(key)
        if a != b:
            sign = "+" if a is None else "-" if b is None else "~"
            detail = _show(b) if a is None else _show(a) if b is None else f"{_show(a)} -> {_show(b)}"
            out.append(_change(sign, "policy", key, detail))
    for key in sorted(set(have) | set(want), key=lambda k: (k[0], _ident(have, want, k))):
        a, b = have.get(key), want.get(key)
        what = _kind_name(b or a)
        if a is None:
            out.append(_change("+", what, b.identity, f"protect {b.protect} ({b.via})"))
        elif b is None:
            out.append(_change("-", what, a.identity, f"protect {a.protect}"))
        elif a.protect != b.protect:  # how it came to be guarded (via) is not a change
            out.append(_change("~", what, b.identity, f"protect {a.protect} -> {b.protect}"))
    for relid in sorted(set(have_cols) | set(want_cols)):
        a, b = have_cols.get(relid, {}), want_cols.get(relid, {})
        rel = (want.get(("pg_class", relid)) or have.get(("pg_class", relid)))
        name = rel.identity if rel else str(relid)
        for attnum in sorted(set(a) | set(b)):
            if attnum not in a:
                out.append(_change("+", "column", f"{name}.{b[attnum]}", "protected"))
            elif attnum not in b:
                out.append(_change("-", "column", f"{name}.{a[attnum]}", "protected"))
    broken = trigger_problems(plpy, {k: v for k, v in want.items() if k in have}, want_cols)
    for key, c in sorted(want.items(), key=lambda kv: kv[1].identity):
        if c.classid != "pg_class" or c.kind not in TRIGGERED_KINDS:
            continue
        if key not in have:
            kinds = list(wanted_triggers(c.kind, want_cols.get(c.objid, {})))
            out.append(_change("+", "triggers", c.identity, ", ".join(
                f"zz_pgwarden_{k}" for k in kinds)))
        elif c.objid in broken:
            out.append(_change("~", "triggers", c.identity, "(re)create " + ", ".join(
                f"zz_pgwarden_{k}" for k in broken[c.objid])))
    return out, (want, want_cols, have, have_cols, broken)


def apply_policy(plpy: Any, GD: dict[str, Any], doc: dict[str, Any], source: str, sha256: str,
                 git_commit: str | None) -> dict[str, Any]:
    """Enforce `doc` in the caller's transaction; returns {"version", "changes"}. The policy is
    stored (with its YAML source, hash and git commit) and a policy_applied record staged."""
    compiled = Compiled(doc)
    st = state.get(plpy, GD)
    st.busy = True
    try:
        diff, (want, want_cols, have, have_cols, broken) = _diff(plpy, GD, compiled)
        for key, c in have.items():
            if key not in want:
                if c.classid == "pg_class":
                    drop_triggers(plpy, c.objid)
                plpy.execute(plpy.prepare(
                    "DELETE FROM pgwarden.protected WHERE classid = $1::regclass AND objid = $2",
                    ["text", "oid"]), [c.classid, c.objid])
        plpy.execute("DELETE FROM pgwarden.protected_column")
        for key, c in want.items():
            plpy.execute(plpy.prepare(
                "INSERT INTO pgwarden.protected (classid, objid, protect, via, identity)"
                " VALUES ($1::regclass, $2, $3, $4, $5) ON CONFLICT (classid, objid) DO UPDATE"
                " SET protect = EXCLUDED.protect, via = EXCLUDED.via, identity = EXCLUDED.identity",
                ["text", "oid", "text", "text", "text"]),
                [c.classid, c.objid, c.protect, c.via, c.identity])
        for relid, cols in want_cols.items():
            for attnum in cols:
                plpy.execute(plpy.prepare(
                    "INSERT INTO pgwarden.protected_column (relid, attnum, protect)"
                    " SELECT $1, $2, protect FROM pgwarden.protected"
                    " WHERE classid = 'pg_catalog.pg_class'::regclass AND objid = $1",
                    ["oid", "int2"]), [relid, attnum])
        for key, c in want.items():
            if c.classid == "pg_class" and c.kind in TRIGGERED_KINDS:
                stale = key not in have or c.objid in broken or \
                    have_cols.get(c.objid, {}) != want_cols.get(c.objid, {})
                if stale:
                    create_triggers(plpy, c.objid, c.kind, want_cols.get(c.objid, {}))
        version = plpy.execute(plpy.prepare(
            "INSERT INTO pgwarden.policy (version, sha256, git_commit, source, doc)"
            " SELECT coalesce(max(version), 0) + 1, $1, $2, $3, $4::jsonb FROM pgwarden.policy"
            " RETURNING version", ["text", "text", "text", "text"]),
            [sha256, git_commit, source, json.dumps(doc)])[0]["version"]
        plpy.execute(plpy.prepare(
            "UPDATE pgwarden.policy_head SET version = $1, epoch = epoch + 1", ["integer"]),
            [version])
        diff = diff + _mask_rows(mask.apply, plpy, GD, doc)
    finally:
        st.busy = False
    ledger.stage(plpy, ledger.record(
        plpy, "policy_applied", policy_version=version, policy_sha256=sha256,
        git_commit=git_commit, changes=len(diff),
        guarded_objects=len(want)))
    return {"version": version, "changes": diff}


def unguard_all(plpy: Any, GD: dict[str, Any]) -> int:
    """Drop every guard trigger and forget every protected object (for uninstall)."""
    st = state.get(plpy, GD)
    st.busy = True
    try:
        relids = [r["relid"] for r in plpy.execute(
            "SELECT DISTINCT relid::bigint AS relid FROM pgwarden.guard_trigger")]
        for relid in relids:
            drop_triggers(plpy, relid)
        plpy.execute("DELETE FROM pgwarden.protected_column")
        plpy.execute("DELETE FROM pgwarden.protected")
        plpy.execute("UPDATE pgwarden.policy_head SET epoch = epoch + 1")
    finally:
        st.busy = False
    return len(relids)


# -- triggers -------------------------------------------------------------------------------

_TRIGGER_SQL = {
    "update": "CREATE TRIGGER zz_pgwarden_update AFTER UPDATE ON {rel} REFERENCING OLD TABLE AS"
              " pgwarden_old FOR EACH STATEMENT EXECUTE FUNCTION pgwarden.tg_write()",
    "delete": "CREATE TRIGGER zz_pgwarden_delete AFTER DELETE ON {rel} REFERENCING OLD TABLE AS"
              " pgwarden_old FOR EACH STATEMENT EXECUTE FUNCTION pgwarden.tg_write()",
    "truncate": "CREATE TRIGGER zz_pgwarden_truncate BEFORE TRUNCATE ON {rel}"
                " FOR EACH STATEMENT EXECUTE FUNCTION pgwarden.tg_truncate()",
    "columns": "CREATE TRIGGER zz_pgwarden_columns BEFORE UPDATE OF {cols} ON {rel}"
               " FOR EACH ROW EXECUTE FUNCTION pgwarden.tg_columns({args})",
}


def create_triggers(plpy: Any, relid: int, relkind: str, cols: dict[int, str]) -> None:
    """(Re)create every guard trigger `relid` needs, ENABLE ALWAYS, and register them."""
    drop_triggers(plpy, relid)
    rel = plpy.execute(plpy.prepare("SELECT $1::regclass::text AS r", ["oid"]), [relid])[0]["r"]
    for kind in wanted_triggers(relkind, cols):
        names = [cols[a] for a in sorted(cols)]
        plpy.execute(_TRIGGER_SQL[kind].format(
            rel=rel, cols=", ".join(plpy.quote_ident(n) for n in names),
            args=", ".join(plpy.quote_literal(n) for n in names)))
        plpy.execute(f"ALTER TABLE {rel} ENABLE ALWAYS TRIGGER zz_pgwarden_{kind}")
        plpy.execute(plpy.prepare(
            "INSERT INTO pgwarden.guard_trigger (tgoid, relid, kind)"
            " SELECT oid, tgrelid, $2 FROM pg_catalog.pg_trigger"
            " WHERE tgrelid = $1 AND tgname = $3", ["oid", "text", "name"]),
            [relid, kind, f"zz_pgwarden_{kind}"])


def drop_triggers(plpy: Any, relid: int) -> None:
    """Unregister and drop the guard triggers of `relid` (those that still exist)."""
    rows = plpy.execute(plpy.prepare(
        "DELETE FROM pgwarden.guard_trigger g WHERE relid = $1"
        " RETURNING (SELECT format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass)"
        "            FROM pg_catalog.pg_trigger t WHERE t.oid = g.tgoid) AS ddl", ["oid"]), [relid])
    for r in rows:
        if r["ddl"]:
            plpy.execute(r["ddl"])


def broken_guards(plpy: Any, relids: set[int]) -> list[dict[str, str]]:
    """Registered guard triggers of `relids` that are gone or not ENABLE ALWAYS."""
    if not relids:
        return []
    return [dict(r) for r in plpy.execute(plpy.prepare(
        "SELECT n.nspname::text AS schema, c.relname::text AS table,"
        " CASE WHEN t.oid IS NULL THEN 'guard trigger zz_pgwarden_' || g.kind || ' is gone'"
        "      ELSE 'guard trigger ' || t.tgname || ' would no longer fire in every session"
        " (it must stay ENABLE ALWAYS)' END AS problem"
        " FROM pgwarden.guard_trigger g"
        " JOIN pg_catalog.pg_class c ON c.oid = g.relid"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_catalog.pg_trigger t ON t.oid = g.tgoid"
        " WHERE g.relid = ANY($1) AND (t.oid IS NULL OR t.tgenabled <> 'A')", ["oid[]"]),
        [sorted(relids)])]


def hiding_rules(plpy: Any, rule_oids: list[int] | None) -> list[dict[str, str]]:
    """Rewrite rules (other than view SELECT rules) that involve a guarded relation: they can
    turn a visible statement on one table into an invisible write on another. None = all."""
    if rule_oids is not None and not rule_oids:
        return []
    return [dict(r) for r in plpy.execute(plpy.prepare(
        "SELECT DISTINCT n.nspname::text AS schema, r.rulename::text AS name,"
        " 'rewrite rule ' || r.rulename || ' on ' || r.ev_class::regclass::text ||"
        " ' involves guarded relation ' || d.refobjid::regclass::text AS problem"
        " FROM pg_catalog.pg_rewrite r"
        " JOIN pg_catalog.pg_class c ON c.oid = r.ev_class"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass"
        "  AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass"
        " JOIN pgwarden.protected p ON p.classid = 'pg_catalog.pg_class'::regclass"
        "  AND p.objid IN (d.refobjid, r.ev_class)"
        " WHERE r.ev_type <> '1' AND ($1::oid[] IS NULL OR r.oid = ANY($1))", ["oid[]"]),
        [rule_oids])]


# -- event-trigger helpers ------------------------------------------------------------------

_RELATION_TAGS = frozenset({"CREATE TABLE", "CREATE TABLE AS", "SELECT INTO", "ALTER TABLE",
                            "CREATE VIEW", "ALTER VIEW", "CREATE MATERIALIZED VIEW",
                            "ALTER MATERIALIZED VIEW", "CREATE SEQUENCE", "ALTER SEQUENCE",
                            "CREATE FOREIGN TABLE", "ALTER FOREIGN TABLE"})


def autoguard(plpy: Any, st: Any, cmds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Guard what `cmds` created or changed that the applied policy covers: relations matching
    its globs, partitions and inheritance children of guarded tables, schemas, functions.
    Returns what was guarded (for the ledger)."""
    if st.compiled is None:
        return []
    touched = {c["objid"] for c in cmds if c["tag"] in _RELATION_TAGS
               and c["classid"] == "pg_class"}
    new_schemas = [c["objid"] for c in cmds if c["tag"] == "CREATE SCHEMA"]
    new_functions = [c["objid"] for c in cmds if c["tag"] in ("CREATE FUNCTION",
                                                              "CREATE PROCEDURE")]
    if not (touched or new_schemas or new_functions):
        return []
    want, want_cols = desired(plpy, st.compiled)
    have, _ = current(plpy)
    guarded = []
    for key, c in want.items():
        if key in have:
            continue
        interesting = (c.classid == "pg_class" and (c.objid in touched or c.via != "policy")) \
            or (c.classid == "pg_namespace" and c.objid in new_schemas) \
            or (c.classid == "pg_proc" and c.objid in new_functions)
        if not interesting:
            continue
        via = "pattern" if c.via == "policy" else c.via
        plpy.execute(plpy.prepare(
            "INSERT INTO pgwarden.protected (classid, objid, protect, via, identity)"
            " VALUES ($1::regclass, $2, $3, $4, $5)", ["text", "oid", "text", "text", "text"]),
            [c.classid, c.objid, c.protect, via, c.identity])
        if c.classid == "pg_class" and c.kind in TRIGGERED_KINDS:
            cols = want_cols.get(c.objid, {})
            for attnum in cols:
                plpy.execute(plpy.prepare(
                    "INSERT INTO pgwarden.protected_column (relid, attnum, protect)"
                    " VALUES ($1, $2, $3)", ["oid", "int2", "text"]), [c.objid, attnum, c.protect])
            create_triggers(plpy, c.objid, c.kind, cols)
        guarded.append({"object_type": _kind_name(c), "object": c.identity,
                        "protect": c.protect, "reason": f"guarded automatically ({via})"})
    return guarded


def forget_dropped(plpy: Any, objs: list[dict[str, Any]]) -> None:
    """Drop registry rows of objects a (permitted) DROP removed; bump the epoch."""
    ids = [o["objid"] for o in objs]
    plpy.execute(plpy.prepare("DELETE FROM pgwarden.guard_trigger WHERE tgoid = ANY($1)"
                              " OR relid = ANY($1)", ["oid[]"]), [ids])
    plpy.execute(plpy.prepare("DELETE FROM pgwarden.protected WHERE objid = ANY($1)",
                              ["oid[]"]), [[o["objid"] for o in objs if not o["objsubid"]]])
    plpy.execute(plpy.prepare(
        "DELETE FROM pgwarden.protected_column WHERE relid = ANY($1)"
        " OR (relid, attnum) IN (SELECT * FROM unnest($2::oid[], $3::int2[]))",
        ["oid[]", "oid[]", "int2[]"]),
        [[o["objid"] for o in objs if o["classid"] == "pg_class" and not o["objsubid"]],
         [o["objid"] for o in objs if o["objsubid"]], [o["objsubid"] for o in objs if o["objsubid"]]])
    plpy.execute("UPDATE pgwarden.policy_head SET epoch = epoch + 1")


# -- diff helpers ---------------------------------------------------------------------------

def flat(doc: dict[str, Any] | None) -> dict[str, Any]:
    """A policy document as "protect core: rules.max_rows.statement" -> value pairs."""
    out: dict[str, Any] = {}
    if not doc:
        return out
    for p in doc["protect"]:
        at = f"protect {p['name']}: "
        for key in ("tables", "schemas", "functions", "columns"):
            out[at + key] = p[key]
        for rule, value in p["rules"].items():
            if isinstance(value, dict):
                out.update({f"{at}{rule}.{k}": v for k, v in value.items()})
            else:
                out[at + rule] = value
    for i, p in enumerate(doc["principals"]):
        at = f"principal {p['name']}: "
        out[at + "order"] = i + 1
        out.update({f"{at}match.{k}": v for k, v in p["match"].items() if v})
        if p["protect"]:
            out[at + "protect"] = p["protect"]
        for rule, value in p["rules"].items():
            if isinstance(value, dict):
                out.update({f"{at}{rule}.{k}": v for k, v in value.items()})
            else:
                out[at + rule] = value
    return out


def _applied_doc(plpy: Any) -> dict[str, Any] | None:
    rows = plpy.execute("SELECT p.doc::text AS doc FROM pgwarden.policy p"
                        " JOIN pgwarden.policy_head h ON h.version = p.version")
    return json.loads(rows[0]["doc"]) if rows else None


def _change(sign: str, kind: str, obj: str, detail: str) -> dict[str, str]:
    return {"change": sign, "kind": kind, "object": obj, "detail": detail}


def _show(v: Any) -> str:
    return "null" if v is None else json.dumps(v) if not isinstance(v, str) else v


def _kind_name(c: Claim) -> str:
    if c.classid == "pg_namespace":
        return "schema"
    if c.classid == "pg_proc":
        return "function"
    return {"r": "table", "p": "table", "v": "view", "m": "materialized view",
            "S": "sequence", "f": "foreign table"}.get(c.kind, "relation")


def _ident(have: dict[Any, Claim], want: dict[Any, Claim], key: Any) -> str:
    c = want.get(key) or have.get(key)
    return c.identity if c else ""

"""Everything that weakens enforcement, as findings (``pgwarden.drift()``, ``pgwarden policy drift``).

Each finding is {"severity": "high"|"medium", "kind", "object", "detail"}:

    guard_trigger     a guard trigger is missing, disabled or not ENABLE ALWAYS (superusers can do
                      this; everyone else is stopped by rule guard_integrity)
    event_trigger     one of pgwarden's event triggers is missing or not ENABLE ALWAYS
    not_enforced      the catalog differs from what the applied policy asks for (an object
                      matching it is not guarded, or a guarded one no longer matches)
    read_all_data,    a role is a member (directly or not) of pg_read_all_data /
    write_all_data    pg_write_all_data, which bypass privileges on every table
    parameter_grant   GRANT SET|ALTER SYSTEM ON PARAMETER (pg_parameter_acl), e.g. on
                      session_replication_role
    role_setting      session_replication_role set per role or database (ALTER ROLE ... SET)
    table_grant       TRUNCATE or TRIGGER granted on a guarded table to a role other than its owner
    own_object_grant  privileges on pgwarden's objects beyond those the extension grants
    rewrite_rule      a rewrite rule involving a guarded relation (hides writes from the guard)
    masking           masking cannot hold (a masked role owns a masked table, is a superuser);
                      what apply would repair is reported as not_enforced (mask.changes)
    agent_role        pgwarden_agent has attributes or memberships beyond logging in
"""

from __future__ import annotations

from typing import Any

from pgwarden_ext import apply, mask, state

EVENT_TRIGGERS = ("pgwarden_sql_drop", "pgwarden_ddl_end", "pgwarden_table_rewrite",
                  "pgwarden_mask_ddl_start", "pgwarden_mask_ddl_end", "pgwarden_mask_sql_drop")
RUNTIME_FUNCTIONS = ("session_identity", "_raise", "_guard_write", "_guard_write_check",
                     "_guard_truncate", "_guard_columns", "_guard_rewrite", "_guard_sql_drop",
                     "_guard_ddl_end",
                     # approvals: they check who is asking themselves (approvals.py)
                     "approve", "deny", "approval_requests", "expire_approvals")


def findings(plpy: Any, GD: dict[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(severity: str, kind: str, obj: str, detail: str) -> None:
        out.append({"severity": severity, "kind": kind, "object": obj, "detail": detail})

    st = state.get(plpy, GD)
    for r in apply.broken_guards(plpy, set(st.relations)):
        add("high", "guard_trigger", f"{r['schema']}.{r['table']}", r["problem"])
    have = {r["evtname"]: r["evtenabled"] for r in plpy.execute(
        "SELECT evtname::text, evtenabled::text FROM pg_catalog.pg_event_trigger")}
    for name in EVENT_TRIGGERS:
        if have.get(name) != "A":
            add("high", "event_trigger", name,
                "missing" if name not in have else f"enabled mode {have[name]!r}, expected 'A'")
    if st.compiled is not None:
        for c in apply.changes(plpy, GD, st.compiled.doc):
            if c["kind"] != "policy":
                add("high", "not_enforced", c["object"],
                    f"{c['change']} {c['kind']} {c['detail']} (run pgwarden policy apply)")
    for r in plpy.execute(
            "SELECT g.rolname::text AS grp, r.rolname::text AS role FROM pg_catalog.pg_roles g"
            " JOIN pg_catalog.pg_roles r ON r.oid <> g.oid AND NOT r.rolsuper"
            "  AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER')"
            " WHERE g.rolname IN ('pg_read_all_data', 'pg_write_all_data') ORDER BY 1, 2"):
        add("high", r["grp"].removeprefix("pg_"), r["role"],
            f"member of {r['grp']}: bypasses table privileges everywhere")
    for r in plpy.execute(
            "SELECT parname::text, paracl::text FROM pg_catalog.pg_parameter_acl ORDER BY 1"):
        add("high" if r["parname"] == "session_replication_role" else "medium",
            "parameter_grant", r["parname"], f"granted: {r['paracl']}")
    for r in plpy.execute(
            "SELECT coalesce(r.rolname::text, 'every role') AS role,"
            " coalesce(d.datname::text, 'every database') AS db, s.setconfig::text AS config"
            " FROM pg_catalog.pg_db_role_setting s"
            " LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole"
            " LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase"
            " WHERE s.setconfig::text LIKE '%session_replication_role%'"):
        add("medium", "role_setting", f"{r['role']} in {r['db']}", r["config"])
    for r in plpy.execute(
            "SELECT c.oid::regclass::text AS rel, a.privilege_type AS priv,"
            " coalesce(g.rolname::text, 'PUBLIC') AS grantee"
            " FROM pgwarden.protected p JOIN pg_catalog.pg_class c ON c.oid = p.objid,"
            " LATERAL aclexplode(c.relacl) a LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee"
            " WHERE p.classid = 'pg_catalog.pg_class'::regclass"
            " AND a.privilege_type IN ('TRUNCATE', 'TRIGGER') AND a.grantee <> c.relowner"
            " ORDER BY 1, 2, 3"):
        add("medium", "table_grant", r["rel"], f"{r['priv']} granted to {r['grantee']}")
    for r in plpy.execute(plpy.prepare(
            "SELECT p.oid::regprocedure::text AS obj, coalesce(g.rolname::text, 'PUBLIC') AS who,"
            " p.proname::text AS name"
            " FROM pg_catalog.pg_proc p, LATERAL aclexplode(p.proacl) a"
            " LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee"
            " WHERE p.pronamespace = 'pgwarden'::regnamespace AND a.grantee <> p.proowner"
            " AND coalesce(g.rolname, '') <> 'pgwarden_admin'"
            " AND NOT (a.grantee = 0 AND p.proname = ANY($1)) ORDER BY 1", ["name[]"]),
            [list(RUNTIME_FUNCTIONS)]):
        if r["who"] in mask.EXPECTED_FUNCTION_GRANTS.get(r["name"], ()):
            continue
        add("high", "own_object_grant", r["obj"], f"EXECUTE granted to {r['who']}")
    for r in plpy.execute(
            "SELECT c.oid::regclass::text AS obj, a.privilege_type AS priv,"
            " coalesce(g.rolname::text, 'PUBLIC') AS who, c.relname::text AS name"
            " FROM pg_catalog.pg_class c, LATERAL aclexplode(c.relacl) a"
            " LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee"
            " WHERE c.relnamespace = 'pgwarden'::regnamespace AND a.grantee <> c.relowner"
            " AND NOT (coalesce(g.rolname, '') = 'pgwarden_admin' AND a.privilege_type = 'SELECT')"
            " AND NOT (c.relname = 'policy_head' AND a.grantee = 0"
            "          AND a.privilege_type = 'SELECT')"
            " ORDER BY 1, 2"):
        if r["priv"] == "SELECT" and r["who"] in mask.EXPECTED_TABLE_GRANTS.get(r["name"], ()):
            continue
        add("high", "own_object_grant", r["obj"], f"{r['priv']} granted to {r['who']}")
    for r in apply.hiding_rules(plpy, None):
        add("medium", "rewrite_rule", f"{r['schema']}.{r['name']}", r["problem"])
    out.extend(mask.drift_findings(plpy))
    return out

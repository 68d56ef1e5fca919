"""Entry points of the guard triggers and event triggers (called by PL/pgSQL in the SQL script).

Each returns None (go on) or an error dict that the PL/pgSQL caller raises (see `decide`).

    needs_check   the hot path of the AFTER UPDATE / AFTER DELETE statement triggers: False
                  when this backend already knows the firing is fine (no SPI at all)
    on_write      the full check behind it: rules require_where, opaque_write, max_rows
    on_truncate   BEFORE TRUNCATE statement trigger: rule no_truncate
    on_columns    BEFORE UPDATE OF <protected columns> row trigger: rule protected_columns
    on_sql_drop   sql_drop event trigger: rule no_drop (cascades included), guard_integrity
    on_ddl_end    ddl_command_end event trigger: guard_integrity; auto-guard new tables,
                  partitions and inheritance children, schemas and functions matching the policy
    on_rewrite    table_rewrite event trigger: rule no_rewrite (ALTER COLUMN TYPE ... USING)

Arguments come from the trigger: `cur_user` is current_user where the statement ran (the
functions here are SECURITY DEFINER, so they cannot see it themselves), `query` is
current_query(). Sessions can call the runtime functions themselves with made-up arguments, so
nothing that decides who is asking, which transaction this is or which policy is in force is
taken from them: `state.State.begin` reads those.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pgwarden_ext import apply, approvals, classify, ledger, lexer, state
from pgwarden_ext.classify import OPAQUE, RESTRICTED, UNRESTRICTED, Summary, Write
from pgwarden_ext.decide import Event, decide
from pgwarden_ext.policy import INTEGRITY_RULE

OWN_SCHEMAS = ("pgwarden", "pgwarden_dblink")
KIND_NAMES = {"r": "table", "p": "table", "v": "view", "m": "materialized view",
              "S": "sequence", "f": "foreign table"}


def needs_check(GD: dict[str, Any], relid: int, op: str, nrows: int, nested: bool, query: str,
                xid: str | None, user: str, version: int, epoch: int) -> bool:
    """The hot path (``pgwarden._guard_write``: no SPI, no SECURITY DEFINER, no SET, each of
    which costs on every call). Counts the firing's rows and returns False when this backend
    already knows that it breaks no rule and needs no record: same policy head and
    session_user as the last full check, the where-verdict of this statement text on this
    relation cached, no limit reached. True: run `on_write`.

    The arguments come from the trigger, but a session may pass made-up ones: they only select
    cache entries and add rows to a transaction bucket (see `state`), so the worst they can do
    is send this backend down the full check."""
    st = GD.get(state.GD_KEY)
    if st is None or st.busy or st.head_key != (version, epoch) or st.session.user != user:
        return True
    if xid != st.xid and st.refresh_each_transaction:
        return True  # identity and groups are re-read once per transaction
    rel = st.relations.get(relid)
    rules = st.rules_cache.get(rel.protect) if rel is not None else None
    if rules is None:
        return True
    actions, limits = rules.actions, rules.limits
    opaque = False
    if actions["require_where"] != "off" or actions["opaque_write"] != "off":
        kind = OPAQUE if nested else st.verdicts.get((query, relid, op))
        if kind is None:
            key = lexer.cache_key(query)
            kind = st.verdicts.get((key, relid, op)) if key is not None else None
            if kind is None:
                return True
        if kind == UNRESTRICTED and actions["require_where"] != "off":
            return True
        if kind == OPAQUE:
            if actions["opaque_write"] != "off":
                return True
            opaque = True
    n = max(nrows, 0)
    if xid not in st.rows and len(st.rows) >= state.OPEN_BUCKETS:
        return True  # let `begin` drop the buckets of finished transactions
    if actions["max_rows"] != "off":
        for applies, limit, rows in ((True, limits["statement"], n),
                                     (opaque, limits["opaque_statement"], n),
                                     (True, limits["transaction"], st.counted(rel.root) + n)):
            if applies and limit is not None and rows > limit:
                return True
    st.count(xid, rel.root, n)
    return False


def on_write(plpy: Any, GD: dict[str, Any], relid: int, op: str, nrows: int, nested: bool,
             query: str, cur_user: str, effect: str | None = None) -> str | None:
    """`effect`: the measure of the write (see approvals.effect_sql) when a rule with action
    approve asked the trigger for it; that call's rows were counted by the one that asked."""
    st = state.get(plpy, GD)
    rel = _relation(plpy, st, relid)
    if rel is None or st.busy:
        return None
    rules = st.rules(rel.protect)
    if rules is None:
        return None
    measured = json.loads(effect) if effect else None
    nrows = max(nrows, 0)
    if measured is None:
        # often the hot path only wanted finished transactions pruned (`begin` just did that),
        # or the rules of a new session: ask it again with what was read here
        if st.head_key is not None and not needs_check(
                GD, relid, op, nrows, nested, query, st.xid, st.session.user, *st.head_key):
            return None
        st.count(st.xid, rel.root, nrows)
    total = st.counted(rel.root)  # `begin` left only the real transaction's bucket
    ev = Event(op, KIND_NAMES.get(rel.kind, "table"), rel.schema, rel.name, "", query, cur_user,
               nrows, rel.protect, rules.principal, relid)
    firing: dict[str, Any] = {}
    opaque = False
    if rules.action("require_where") != "off" or rules.action("opaque_write") != "off":
        kind, reason = where_verdict(plpy, st, rel, op, nested, query)
        rule = {UNRESTRICTED: "require_where", OPAQUE: "opaque_write"}.get(kind)
        if rule:
            opaque = kind == OPAQUE
            err = decide(plpy, st, rule, rules.action(rule), replace(ev, reason=reason),
                         measured, firing)
            if err:
                return json.dumps(err)
    action, limits = rules.action("max_rows"), rules.limits
    checks = [
        (opaque, limits["opaque_statement"], nrows,
         "the statement, which pgwarden cannot see into, changed {n} rows; the limit for such "
         "statements is {m}"),
        (True, limits["statement"], nrows, "the statement changed {n} rows; the limit is {m}"),
        (True, limits["transaction"], total,
         "this transaction has changed {n} rows of the table; the limit is {m} per transaction"),
    ]
    for applies, limit, n, text in checks:
        if action != "off" and applies and limit is not None and n > limit:
            reason = text.format(n=n, m=limit)
            err = decide(plpy, st, "max_rows", action, replace(ev, reason=reason), measured,
                         firing)
            if err:
                return json.dumps(err)
    return None


def where_verdict(plpy: Any, st: Any, rel: Any, op: str, nested: bool,
                  query: str) -> tuple[str, str]:
    """classify.verdict for this firing, with what only the database knows: nesting, SQL-level
    prepared statements, cascading foreign keys and which called functions are user code.
    Verdicts that depend on nothing else than the text, the relation and the operation (no
    EXECUTE, no function call: the prepared statements and functions of a session change) are
    remembered for `needs_check`."""
    if nested:
        return OPAQUE, ("the write ran inside a function, procedure, DO block or trigger, whose "
                        "statements pgwarden cannot see")
    conforming = "\\" not in query or plpy.execute(
        "SELECT pg_catalog.current_setting('standard_conforming_strings') = 'on' AS c")[0]["c"]
    summ, literal_free = st.summary(plpy, query, conforming)
    writes, opaque, calls = list(summ.writes), list(summ.opaque), set(summ.calls)
    for name in summ.executes:
        text = _prepared_text(plpy, name)
        inner = st.summary(plpy, text, conforming)[0] if text is not None else \
            Summary(opaque=(f"EXECUTE {name}",))
        writes += inner.writes
        # SQL-level PREPARE keeps the whole client string, which may name the same EXECUTEs
        opaque += list(inner.opaque) + [f"nested EXECUTE {n}" for n in inner.executes
                                        if n not in summ.executes]
        calls |= inner.calls
    if any((w.schema, w.table) != (rel.schema, rel.name) for w in writes):
        for schema, table, pop in st.fk_ancestors(plpy, rel.relid, op):
            writes += [Write(op, rel.schema, rel.name, w.restricted) for w in list(writes)
                       if w.op == pop and w.table == table and w.schema in (None, schema)]
    merged = Summary(tuple(writes), tuple(opaque), (), frozenset(calls))
    kind, reason = classify.verdict(merged, rel.schema, rel.name, op)
    if kind != UNRESTRICTED and calls:
        user_code = _user_functions(plpy, calls)
        if user_code:
            return OPAQUE, (f"the statement calls {', '.join(user_code)}, whose statements "
                            "pgwarden cannot see")
    if not summ.executes and not calls:
        st.remember_verdict(query, rel.relid, op, kind, literal_free)
    return kind, reason


def on_truncate(plpy: Any, GD: dict[str, Any], relid: int, cur_user: str,
                query: str) -> str | None:
    st = state.get(plpy, GD)
    rel = _relation(plpy, st, relid)
    rules = st.rules(rel.protect) if rel is not None and not st.busy else None
    if rules is None:
        return None
    ev = Event("TRUNCATE", "table", rel.schema, rel.name,
               f"TRUNCATE removes every row of {rel.qualified}", query, cur_user, None,
               rel.protect, rules.principal, relid)
    err = decide(plpy, st, "no_truncate", rules.action("no_truncate"), ev,
                 approvals.object_effect("TRUNCATE", [f"{relid}:{rel.qualified}"]))
    return json.dumps(err) if err else None


def on_columns(plpy: Any, GD: dict[str, Any], relid: int, columns: list[str], cur_user: str,
               query: str) -> str | None:
    st = state.get(plpy, GD)
    rel = _relation(plpy, st, relid)
    rules = st.rules(rel.protect) if rel is not None and not st.busy else None
    if rules is None:
        return None
    ev = Event("UPDATE", "table", rel.schema, rel.name,
               f"the UPDATE changes protected column(s) {', '.join(columns)}", query, cur_user,
               None, rel.protect, rules.principal)
    action = rules.action("protected_columns")
    # decided row by row, so not approvable (validate refuses it; a hand-made document blocks)
    err = decide(plpy, st, "protected_columns", "block" if action == "approve" else action, ev)
    return json.dumps(err) if err else None


def on_rewrite(plpy: Any, GD: dict[str, Any], relid: int, cur_user: str,
               query: str) -> str | None:
    st = state.get(plpy, GD)
    rel = _relation(plpy, st, relid)
    rules = st.rules(rel.protect) if rel is not None and not st.busy else None
    if rules is None:
        return None
    ev = Event("ALTER TABLE", "table", rel.schema, rel.name,
               f"the command rewrites every row of {rel.qualified} (for example ALTER COLUMN "
               "... TYPE ... USING)", query, cur_user, None, rel.protect, rules.principal)
    err = decide(plpy, st, "no_rewrite", rules.action("no_rewrite"), ev,
                 approvals.object_effect("ALTER TABLE", [f"{relid}:{rel.qualified}"]))
    return json.dumps(err) if err else None


def on_sql_drop(plpy: Any, GD: dict[str, Any], objects: str, cur_user: str, tag: str,
                query: str) -> str | None:
    """`objects`: JSON list of pg_event_trigger_dropped_objects() rows (see the SQL script)."""
    st = state.get(plpy, GD)
    objs = json.loads(objects or "[]")
    if st.busy or any(o["type"] == "extension" and o["name"] == "pgwarden" for o in objs):
        return None
    dropped_rels = {o["objid"] for o in objs if o["classid"] == "pg_class" and not o["objsubid"]}
    protected = {(r["classid"], r["objid"]): r["protect"] for r in plpy.execute(plpy.prepare(
        "SELECT classid::text AS classid, objid::bigint, protect FROM pgwarden.protected"
        " WHERE objid = ANY($1)", ["oid[]"]), [[o["objid"] for o in objs]])}
    guard_triggers = {r["tgoid"]: r["relid"] for r in plpy.execute(plpy.prepare(
        "SELECT tgoid::bigint, relid::bigint FROM pgwarden.guard_trigger WHERE tgoid = ANY($1)",
        ["oid[]"]), [[o["objid"] for o in objs if o["classid"] == "pg_trigger"]])}
    changed = False
    effect = approvals.object_effect(tag, [f"{o['classid']}:{o['objid']}:{o['objsubid']}:"
                                           f"{o['identity']}" for o in objs])
    firing: dict[str, Any] = {}
    for o in objs:
        how = "" if o["original"] else f" (dropped along with the {tag} ... CASCADE)"
        ev = Event(tag, o["type"], o["schema"], o["name"] or o["identity"], "", query, cur_user)
        if o["schema"] in OWN_SCHEMAS:
            err = _integrity(plpy, st, replace(ev, reason=f"{o['identity']} belongs to pgwarden"))
        elif o["classid"] == "pg_trigger" and o["objid"] in guard_triggers:
            changed = True
            if guard_triggers[o["objid"]] in dropped_rels:
                continue  # its table goes too: that drop is judged on its own
            err = _integrity(plpy, st, replace(
                ev, reason=f"{o['identity']} is a pgwarden guard trigger"))
        elif (o["classid"], o["objid"]) in protected and not o["objsubid"]:
            changed = True
            rules = st.rules(protected[(o["classid"], o["objid"])])
            if rules is None:
                continue
            err = decide(plpy, st, "no_drop", rules.action("no_drop"), replace(
                ev, reason=f"{o['type']} {o['identity']} is protected{how}",
                protect=rules.protect, principal=rules.principal), effect, firing)
        elif o["classid"] == "pg_class" and o["objsubid"] and o["objid"] in st.relations \
                and o["objid"] not in dropped_rels:
            rel = st.relations[o["objid"]]
            rules = st.rules(rel.protect)
            if rules is None:
                continue
            changed = True
            err = decide(plpy, st, "no_drop", rules.action("no_drop"), replace(
                ev, object_type="table column", schema=rel.schema, name=rel.name,
                reason=f"{o['identity']} is a column of a protected table{how}",
                protect=rules.protect, principal=rules.principal), effect, firing)
        else:
            continue
        if err:
            return json.dumps(err)
    if changed:
        apply.forget_dropped(plpy, objs)
    return None


def on_ddl_end(plpy: Any, GD: dict[str, Any], commands: str, cur_user: str, tag: str,
               query: str) -> str | None:
    """`commands`: JSON list of pg_event_trigger_ddl_commands() rows (see the SQL script)."""
    st = state.get(plpy, GD)
    cmds = json.loads(commands or "[]")
    if st.busy or not cmds:
        return None
    for c in cmds:
        if c["schema"] in OWN_SCHEMAS:
            err = _integrity(plpy, st, Event(c["tag"], c["type"], c["schema"], c["identity"],
                                             f"{c['identity']} belongs to pgwarden", query,
                                             cur_user))
            if err:
                return json.dumps(err)
    relids = {c["objid"] for c in cmds if c["classid"] == "pg_class"}
    trigger_relids = {r["relid"] for r in plpy.execute(plpy.prepare(
        "SELECT tgrelid::bigint AS relid FROM pg_catalog.pg_trigger WHERE oid = ANY($1)",
        ["oid[]"]), [[c["objid"] for c in cmds if c["classid"] == "pg_trigger"]])}
    touched = (relids | trigger_relids) & set(st.relations)
    for broken in apply.broken_guards(plpy, touched):
        err = _integrity(plpy, st, Event(tag, "trigger", broken["schema"], broken["table"],
                                         broken["problem"], query, cur_user))
        if err:
            return json.dumps(err)
    for rule in apply.hiding_rules(plpy, [c["objid"] for c in cmds if c["type"] == "rule"]):
        err = _integrity(plpy, st, Event(tag, "rule", rule["schema"], rule["name"],
                                         rule["problem"], query, cur_user))
        if err:
            return json.dumps(err)
    st.busy = True
    try:
        guarded = apply.autoguard(plpy, st, cmds)
    finally:
        st.busy = False
    if guarded or touched:
        plpy.execute("UPDATE pgwarden.policy_head SET epoch = epoch + 1")
    for g in guarded:
        ledger.stage(plpy, ledger.record(
            plpy, "object_guarded", op=tag, current_user=cur_user, policy_version=st.version,
            policy_sha256=st.sha256, **g))
    return None


def _integrity(plpy: Any, st: Any, ev: Event) -> dict[str, Any] | None:
    """Self-defence: pgwarden's objects and guard triggers change only for pgwarden admins
    (members of pgwarden_admin, which superusers always are); their changes are recorded."""
    admin = plpy.execute("SELECT pg_catalog.pg_has_role(session_user, 'pgwarden_admin',"
                         " 'MEMBER') AS a")[0]["a"]
    return decide(plpy, st, INTEGRITY_RULE, "allow" if admin else "block", ev)


def _relation(plpy: Any, st: Any, relid: int) -> Any:
    rel = st.relations.get(relid)
    if rel is None:
        st.reload(plpy)
        rel = st.relations.get(relid)
    return rel


def _prepared_text(plpy: Any, name: str) -> str | None:
    rows = plpy.execute(plpy.prepare(
        "SELECT statement, from_sql FROM pg_catalog.pg_prepared_statements WHERE name = $1",
        ["text"]), [name])
    if not rows:
        return None
    text = rows[0]["statement"]
    return lexer.strip_prepare(text) if rows[0]["from_sql"] else text


def _user_functions(plpy: Any, names: set[str]) -> list[str]:
    """Those of `names` that some non-builtin function carries (any language but C and
    internal, any schema but pg_catalog and pgwarden's): code that may run any SQL."""
    rows = plpy.execute(plpy.prepare(
        "SELECT DISTINCT p.proname::text || '()' AS f FROM pg_catalog.pg_proc p"
        " WHERE p.proname = ANY($1)"
        " AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'pgwarden'::regnamespace)"
        " AND p.prolang NOT IN (SELECT oid FROM pg_catalog.pg_language"
        "                        WHERE lanname IN ('internal', 'c'))"
        " ORDER BY 1", ["name[]"]), [sorted(names)])
    return [r["f"] for r in rows]


__all__ = ["needs_check", "on_write", "on_truncate", "on_columns", "on_rewrite", "on_sql_drop",
           "on_ddl_end",
           "where_verdict", "RESTRICTED"]

"""Just-in-time approvals: requests, reviews, one-time grants and the notification outbox.

A rule whose action is ``approve`` does not refuse for good: the statement fails with SQLSTATE
PW002 and an approval request (table ``pgwarden.approval_request``, sql/0.1/55_approvals.sql),
which a reviewer approves or denies (``pgwarden.approve`` / ``pgwarden.deny``, the CLI
``pgwarden approvals``). An approval is a one-time grant bound to

* the principal: session_user and the attested identity (``pgwarden.session_identity()``);
* the statement: its fingerprint (literal-free shape), the rule, the operation, the object;
* the effect: SHA-256 of the sorted primary keys of the rows it changes, from the trigger's
  transition table (for DDL rules: of the objects). Prepared statements show only ``$1`` in
  their text, so the effect is what ties a grant to the rows the reviewer saw.

`require` runs in the statement's transaction: a matching grant is consumed there
(``UPDATE ... WHERE uses_left > 0 RETURNING``, so a rolled-back run does not use it up and of
two concurrent runs one waits for the other and finds nothing left); without one, the request
is created (or, while pending, reused) by `create` in the autonomous dblink session, so it
survives the rollback of the refused statement.

Impact preview: the rows the statement would change are counted, their keys hashed and (up to
`KEYS_CAP` rows) stored, by the AFTER statement trigger that already sees them: the statement
has run when the trigger fires, and the error rolls it back, so the dry run leaves nothing
behind. Only key columns are ever read into the request; a table without a primary key gets a
hash of its rows and no sample. The request function recomputes the hash from the keys it is
given, so what a reviewer sees (count, sample) is exactly what the grant allows, even for a
request a session forged by calling the runtime functions itself (for more than `KEYS_CAP`
rows only the count and hash are bound, and the request says its sample is unverified).

Every step is a ledger record (``approval_requested``, ``approval_required`` for each refused
run, ``approval_granted``, ``approval_denied``, ``approval_used``, ``approval_expired``) and an
outbox event (``pgwarden.approval_event``) that ``pgwarden notify run`` delivers; the database
never waits on a webhook.
"""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatchcase
from typing import Any

from pgwarden_ext import ledger, lexer, state

KEYS_CAP = 100_000
SAMPLE = 10
DEFAULTS: dict[str, Any] = {"request_ttl": 86400, "grant_ttl": 1800,
                            "reviewers": {"roles": [], "member_of": []}}
NOTIFY_CHANNEL = "pgwarden_approvals"
_PUBLIC = ("id", "status", "created_at", "expires_at", "requester", "identity", "requester_role",
           "pid", "backend_start", "application_name", "client_addr", "rule", "op",
           "object_type", "object", "reason", "statement", "fingerprint", "policy_version",
           "rows", "key_columns", "key_sample", "effect", "reviewer", "reviewer_os_user",
           "reviewed_at", "comment", "grant_expires_at", "uses_left", "used_at", "used_pid",
           "used_backend_start")
_SELECT = (
    "SELECT r.id, r.status, r.created_at::text AS created_at, r.expires_at::text AS expires_at,"
    " r.requester::text AS requester, r.identity, r.requester_role::text AS requester_role,"
    " r.pid, r.backend_start::text AS backend_start, r.application_name, r.client_addr,"
    " r.rule, r.op, r.object_type, r.object, r.reason, r.statement, r.fingerprint,"
    " r.policy_version, r.rows, r.key_columns, r.key_sample::text AS key_sample, r.effect,"
    " r.reviewer::text AS reviewer, r.reviewer_os_user, r.reviewed_at::text AS reviewed_at,"
    " r.comment, r.grant_expires_at::text AS grant_expires_at, r.uses_left,"
    " r.used_at::text AS used_at, r.used_pid,"
    " r.used_backend_start::text AS used_backend_start"
    " FROM pgwarden.approval_request r")


def settings(st: Any) -> dict[str, Any]:
    """The policy's approvals section, with defaults."""
    doc = st.compiled.doc if st.compiled is not None else {}
    return {**DEFAULTS, **doc.get("approvals", {})}


def check(section: Any, expect: Any) -> None:
    """Server-side check of the canonical approvals section (see agent/policy/schema.py)."""
    expect(isinstance(section, dict) and set(section) <= set(DEFAULTS), "approvals",
           "an object with request_ttl, grant_ttl, reviewers")
    for key in ("request_ttl", "grant_ttl"):
        v = section.get(key, 1)
        expect(isinstance(v, int) and not isinstance(v, bool) and v > 0, f"approvals.{key}",
               "a number of seconds")
    r = section.get("reviewers", {"roles": [], "member_of": []})
    expect(isinstance(r, dict) and set(r) == {"roles", "member_of"} and all(
        isinstance(r[k], list) and all(isinstance(x, str) and x for x in r[k]) for k in r),
        "approvals.reviewers", "roles and member_of, lists of names")


# -- the statement's side --------------------------------------------------------------------

def effect_sql(plpy: Any, relid: int) -> str:
    """The query the guard trigger runs over its transition table (pgwarden_old) to measure a
    write: {"rows", "hash", "keys", "key_columns"}. Everything is schema-qualified: the trigger
    function runs it with the session's search_path."""
    cols = [r["a"] for r in plpy.execute(plpy.prepare(
        "SELECT a.attname::text AS a FROM pg_catalog.pg_index i"
        " JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
        " WHERE i.indrelid = $1 AND i.indisprimary"
        " ORDER BY pg_catalog.array_position(i.indkey::int2[], a.attnum)", ["oid"]), [relid])]
    if cols:
        key = ("pg_catalog.jsonb_build_array("
               + ", ".join("o." + plpy.quote_ident(c) for c in cols) + ")::pg_catalog.text")
        keys = f"CASE WHEN n OPERATOR(pg_catalog.<=) {KEYS_CAP} THEN t END"
        names = ("ARRAY[" + ", ".join(plpy.quote_literal(c) for c in cols)
                 + "]::pg_catalog.text[]")
    else:  # no key to show: bind the grant to whole rows, show nothing of them
        key, keys, names = ("pg_catalog.to_jsonb(o)::pg_catalog.text", "NULL::pg_catalog.text",
                            "'{}'::pg_catalog.text[]")
    return ("SELECT pg_catalog.jsonb_build_object('rows', n, 'hash', pg_catalog.encode("
            "pg_catalog.sha256(pg_catalog.convert_to(t, 'UTF8')), 'hex'), 'keys', " + keys
            + ", 'key_columns', " + names + ") FROM (SELECT pg_catalog.count(*) AS n,"
            " '['::pg_catalog.text OPERATOR(pg_catalog.||) coalesce(pg_catalog.string_agg(k,"
            " ','::pg_catalog.text ORDER BY k COLLATE pg_catalog.\"C\"), ''::pg_catalog.text)"
            " OPERATOR(pg_catalog.||) ']'::pg_catalog.text AS t FROM (SELECT " + key
            + " AS k FROM pgwarden_old o) s) x")


def object_effect(tag: str, identities: list[str]) -> dict[str, Any]:
    """The effect of a DDL statement: the objects it touches (a grant for DROP of one table
    does not drop another of the same name: identities are resolved by the event trigger)."""
    text = json.dumps([tag, sorted(identities)], separators=(",", ":"))
    return {"rows": None, "hash": hashlib.sha256(text.encode()).hexdigest(), "keys": None,
            "key_columns": [], "objects": sorted(identities)}


def require(plpy: Any, st: Any, rule: str, ev: Any, effect: dict[str, Any] | None,
            firing: dict[str, Any]) -> dict[str, Any] | None:
    """Rule `rule` (action approve) fired for `ev`: None when a matching grant is consumed (or
    was, by an earlier rule of this same firing), else the error to raise: PW002 naming the
    request. Without `effect` yet, {"effect_sql": ...} asks the trigger to measure it."""
    if firing.get("granted"):
        return None
    if effect is None:
        return {"effect_sql": effect_sql(plpy, ev.relid)}
    query = ev.query or ""
    conforming = "\\" not in query or plpy.execute(
        "SELECT pg_catalog.current_setting('standard_conforming_strings') = 'on' AS c")[0]["c"]
    statement = lexer.normalize(query, conforming)
    fingerprint = lexer.fingerprint(statement)
    who = (st.session.user, st.session.identity)
    used = plpy.execute(plpy.prepare(
        "WITH g AS (SELECT id FROM pgwarden.approval_request"
        "   WHERE status = 'approved' AND uses_left > 0 AND grant_expires_at > clock_timestamp()"
        "     AND requester = $1 AND coalesce(identity, '') = coalesce($2, '') AND rule = $3"
        "     AND op = $4 AND object = $5 AND fingerprint = $6 AND effect = $7"
        "   ORDER BY id LIMIT 1)"
        " UPDATE pgwarden.approval_request r SET uses_left = r.uses_left - 1,"
        "   status = CASE WHEN r.uses_left = 1 THEN 'used' ELSE r.status END,"
        "   used_at = clock_timestamp(), used_pid = pg_backend_pid(),"
        "   used_backend_start = (SELECT backend_start FROM pg_stat_activity"
        "                          WHERE pid = pg_backend_pid()),"
        "   used_xid = pg_current_xact_id()::text"
        "  FROM g WHERE r.id = g.id AND r.status = 'approved' AND r.uses_left > 0"
        "   AND r.grant_expires_at > clock_timestamp()"
        " RETURNING r.id",
        ["name", "text", "text", "text", "text", "text", "text"]),
        [who[0], who[1], rule, ev.op, ev.object, fingerprint, effect["hash"]])
    if used:
        firing["granted"] = True
        request_id = used[0]["id"]
        row = _row(plpy, request_id)
        ledger.stage(plpy, ledger.record(
            plpy, "approval_used", request_id=request_id, rule=rule, op=ev.op,
            object=ev.object, rows=effect["rows"], statement=statement,
            fingerprint=fingerprint, effect=effect["hash"], current_user=ev.current_user,
            reviewer=row["reviewer"], xid=st.xid, policy_version=st.version))
        _event(plpy, row, "used")
        return None
    return _request(plpy, st, rule, ev, effect, statement, fingerprint)


def _request(plpy: Any, st: Any, rule: str, ev: Any, effect: dict[str, Any], statement: str,
             fingerprint: str) -> dict[str, Any]:
    sess = ledger.session_fields(plpy)
    fields = {
        "requester": st.session.user, "identity": st.session.identity,
        "requester_role": ev.current_user, "pid": sess["pid"],
        "backend_start": sess["backend_start"], "application_name": sess["application_name"],
        "client_addr": sess["client_addr"], "rule": rule, "op": ev.op,
        "object_type": ev.object_type, "object": ev.object, "reason": ev.reason,
        "statement": statement, "fingerprint": fingerprint, "policy_version": st.version,
        "rows": effect["rows"], "key_columns": effect.get("key_columns") or [],
        "keys": effect.get("keys"), "objects": effect.get("objects"), "effect": effect["hash"],
        "request_ttl": settings(st)["request_ttl"]}
    common = dict(request_id=None, rule=rule, op=ev.op, object_type=ev.object_type,
                  object=ev.object, rows=effect["rows"], statement=statement,
                  fingerprint=fingerprint, effect=effect["hash"], current_user=ev.current_user,
                  protect=ev.protect, principal=ev.principal, xid=st.xid,
                  policy_version=st.version, policy_sha256=st.sha256)
    records = {"approval_required": ledger.record(plpy, "approval_required", action="approve",
                                                  reason=ev.reason, **common),
               "approval_requested": ledger.record(plpy, "approval_requested", **common)}
    sql = ("SELECT pgwarden._approval_request(" + plpy.quote_literal(json.dumps(fields))
           + ", " + plpy.quote_literal(json.dumps(records)) + ")::text")
    try:
        made = json.loads(ledger.autonomous(plpy, st, sql) or "null")
    except (plpy.SPIError, RuntimeError) as e:
        plpy.warning(f"pgwarden: could not store the approval request autonomously ({e}); "
                     f"record: {records['approval_required']}")
        made = None
    return error(rule, ev, st, effect, made)


def error(rule: str, ev: Any, st: Any, effect: dict[str, Any],
          made: dict[str, Any] | None) -> dict[str, Any]:
    """PW002. The request id is in the message as "approval request <id>" (docs/events.md:
    the capture agent reads the message, which it keeps), and in the hint's commands."""
    rows = "" if effect["rows"] is None else f" It would change {effect['rows']} row(s)."
    entry = f' protect entry "{ev.protect}",' if ev.protect else ""
    who = f"session user {st.session.user}" + (
        f" (principal {ev.principal})" if ev.principal else "")
    detail = f"{ev.reason}.{rows} Policy version {st.version},{entry} {who}."
    head = f"pgwarden: {ev.op} on {ev.object_type} {ev.object} requires approval (rule {rule})"
    if made is None:
        message = head + ": the approval request could not be stored"
        hint = ("pgwarden could not write the request (see the server log); ask a pgwarden "
                "admin to check `pgwarden db status`.")
    else:
        rid = made["id"]
        message = f"{head}: approval request {rid}"
        detail += (f" Approval request {rid} is pending review until {made['expires_at']}"
                   + ("." if made["new"] else " (this statement had already asked for it)."))
        hint = (f"A reviewer approves it with `pgwarden approvals approve {rid}` (details: "
                f"`pgwarden approvals show {rid}`); then run the same statement again, on the "
                "same rows, before the grant expires: it goes through once.")
    return {"sqlstate": "PW002", "message": message, "detail": detail, "hint": hint,
            "rule": rule, "schema": ev.schema or "", "table": ev.name if ev.schema else ""}


# -- the autonomous session -------------------------------------------------------------------

def create(plpy: Any, GD: dict[str, Any], fields_json: str, records_json: str) -> str:
    """In the dblink session: create the request or reuse the identical pending one, stage its
    ledger records, queue the 'requested' event; {"id", "new", "expires_at"}."""
    f = json.loads(fields_json)
    records = json.loads(records_json)
    keys = f.get("keys")
    sample: Any = None
    if keys is not None:  # what a reviewer sees is what the grant allows (module docstring)
        if hashlib.sha256(keys.encode()).hexdigest() != f["effect"]:
            plpy.error("pgwarden: the keys of the approval request do not match its effect",
                       sqlstate="22023")
        parsed = json.loads(keys)
        f["rows"], sample = len(parsed), parsed[:SAMPLE]
    elif f.get("objects") is not None:
        sample = f["objects"][:SAMPLE]
    expire(plpy, GD)
    cols = ("requester", "identity", "requester_role", "pid", "backend_start",
            "application_name", "client_addr", "rule", "op", "object_type", "object", "reason",
            "statement", "fingerprint", "policy_version", "rows", "key_columns", "keys",
            "effect")
    types = ("name", "text", "name", "integer", "timestamptz", "text", "text", "text", "text",
             "text", "text", "text", "text", "text", "integer", "bigint", "text[]", "text",
             "text")
    args = [f.get(c) for c in cols] + [json.dumps(sample) if sample is not None else None,
                                       f["request_ttl"]]
    n = len(cols)
    row = plpy.execute(plpy.prepare(
        "INSERT INTO pgwarden.approval_request (" + ", ".join(cols) + ", key_sample, expires_at)"
        " VALUES (" + ", ".join(f"${i + 1}" for i in range(n)) + f", ${n + 1}::jsonb,"
        f" clock_timestamp() + make_interval(secs => ${n + 2}))"
        " ON CONFLICT (requester, (coalesce(identity, '')), rule, op, object, fingerprint,"
        "              effect) WHERE status = 'pending' DO NOTHING"
        " RETURNING id, expires_at::text", [*types, "text", "double precision"]), args)
    new = bool(row)
    if not new:
        row = plpy.execute(plpy.prepare(
            "SELECT id, expires_at::text FROM pgwarden.approval_request"
            " WHERE status = 'pending' AND requester = $1 AND coalesce(identity, '') ="
            " coalesce($2, '') AND rule = $3 AND op = $4 AND object = $5 AND fingerprint = $6"
            " AND effect = $7", ["name", "text", "text", "text", "text", "text", "text"]),
            [f["requester"], f["identity"], f["rule"], f["op"], f["object"], f["fingerprint"],
             f["effect"]])
    rid, expires_at = row[0]["id"], row[0]["expires_at"]
    placeholder = '"request_id":null'
    kinds = ["approval_requested", "approval_required"] if new else ["approval_required"]
    for kind in kinds:
        assert records[kind].count(placeholder) == 1
        ledger.stage(plpy, records[kind].replace(placeholder, f'"request_id":{rid}'))
    if new:
        _event(plpy, _row(plpy, rid), "requested")
    plpy.execute("SELECT pgwarden.chain_pending(1000)")
    return json.dumps({"id": rid, "new": new, "expires_at": expires_at})


# -- reviewers --------------------------------------------------------------------------------

def is_reviewer(plpy: Any, st: Any) -> bool:
    """session_user is a reviewer of the policy (roles: globs; member_of: groups) or a pgwarden
    admin. Never current_user: SET ROLE and SECURITY DEFINER wrappers do not make a reviewer."""
    r = settings(st)["reviewers"]
    row = plpy.execute(plpy.prepare(
        "SELECT session_user::text AS u, pg_has_role(session_user, 'pgwarden_admin', 'MEMBER')"
        " AS admin, coalesce((SELECT bool_or(pg_has_role(session_user, g.oid, 'MEMBER'))"
        " FROM pg_roles g WHERE g.rolname = ANY($1)), false) AS member", ["name[]"]),
        [r["member_of"]])[0]
    return row["admin"] or row["member"] or any(fnmatchcase(row["u"], g) for g in r["roles"])


def review(plpy: Any, GD: dict[str, Any], rid: int, approve: bool, text: str | None,
           os_user: str | None) -> str:
    """pgwarden.approve / pgwarden.deny: the reviewer is session_user (plus the OS user the
    CLI reports, which is information, not proof); the requester may not review their own.
    Returns the request, or an error for the PL/pgSQL caller to raise (pgwarden._raise)."""
    st = state.get(plpy, GD)
    if not is_reviewer(plpy, st):
        return _refuse("42501", "only reviewers (approvals.reviewers in pgwarden.yaml) and "
                       "pgwarden admins may review approval requests")
    expire(plpy, GD)
    rows = plpy.execute(plpy.prepare(
        "SELECT status, requester::text AS requester FROM pgwarden.approval_request"
        " WHERE id = $1 FOR UPDATE", ["bigint"]), [rid])
    if not rows:
        return _refuse("P0002", f"no approval request {rid}")
    if rows[0]["status"] != "pending":
        return _refuse("55000", f"approval request {rid} is {rows[0]['status']}, not pending")
    me = plpy.execute("SELECT session_user::text AS u")[0]["u"]
    if rows[0]["requester"] == me:
        return _refuse("42501", f"{me} requested approval request {rid} and may not review it "
                       "(a requester cannot approve their own request)")
    if not approve and not (text or "").strip():
        return _refuse("22023", "a denial needs a reason")
    if approve:
        plpy.execute(plpy.prepare(
            "UPDATE pgwarden.approval_request SET status = 'approved', reviewer = session_user,"
            " reviewer_os_user = $2, reviewed_at = clock_timestamp(), comment = $3,"
            " uses_left = 1, grant_expires_at = clock_timestamp() + make_interval(secs => $4)"
            " WHERE id = $1", ["bigint", "text", "text", "double precision"]),
            [rid, os_user, text, settings(st)["grant_ttl"]])
    else:
        plpy.execute(plpy.prepare(
            "UPDATE pgwarden.approval_request SET status = 'denied', reviewer = session_user,"
            " reviewer_os_user = $2, reviewed_at = clock_timestamp(), comment = $3"
            " WHERE id = $1", ["bigint", "text", "text"]), [rid, os_user, text])
    row = _row(plpy, rid)
    ledger.stage(plpy, ledger.record(
        plpy, "approval_granted" if approve else "approval_denied", request_id=rid,
        requester=row["requester"], rule=row["rule"], op=row["op"], object=row["object"],
        statement=row["statement"], fingerprint=row["fingerprint"], effect=row["effect"],
        reviewer_os_user=os_user, comment=text, grant_expires_at=row["grant_expires_at"],
        policy_version=st.version))
    _event(plpy, row, "approved" if approve else "denied")
    return json.dumps(row, default=str)


def expire(plpy: Any, GD: dict[str, Any]) -> int:
    """Pending requests and unused grants past their time become 'expired' (ledger, event).
    Rows another transaction holds (a grant being used) are left for the next sweep."""
    rows = plpy.execute(
        "UPDATE pgwarden.approval_request r SET status = 'expired', uses_left = 0"
        " WHERE r.id IN (SELECT id FROM pgwarden.approval_request"
        "   WHERE (status = 'pending' AND expires_at <= clock_timestamp())"
        "      OR (status = 'approved' AND grant_expires_at <= clock_timestamp())"
        "   FOR UPDATE SKIP LOCKED)"
        " RETURNING r.id, r.reviewed_at IS NOT NULL AS granted")
    for r in rows:
        row = _row(plpy, r["id"])
        ledger.stage(plpy, ledger.record(
            plpy, "approval_expired", request_id=r["id"], what="grant" if r["granted"] else
            "request", requester=row["requester"], rule=row["rule"], op=row["op"],
            object=row["object"], fingerprint=row["fingerprint"]))
        _event(plpy, row, "expired")
    return len(rows)


def requests(plpy: Any, GD: dict[str, Any], status: str | None, rid: int | None) -> list[str]:
    """Requests, newest first: all for reviewers and admins, one's own for everyone else; with
    `rid`, that one with its events and their deliveries."""
    st = state.get(plpy, GD)
    expire(plpy, GD)
    everyone = is_reviewer(plpy, st)
    rows = plpy.execute(plpy.prepare(
        _SELECT + " WHERE ($1::text IS NULL OR r.status = $1) AND ($2::bigint IS NULL"
        " OR r.id = $2) AND ($3 OR r.requester = session_user) ORDER BY r.id DESC",
        ["text", "bigint", "boolean"]), [status, rid, everyone])
    out = []
    for r in rows:
        d = _public(r)
        if rid is not None:
            d["events"] = [json.loads(e["e"]) for e in plpy.execute(plpy.prepare(
                "SELECT jsonb_build_object('id', e.id, 'event', e.event, 'at', e.at,"
                " 'deliveries', coalesce((SELECT jsonb_agg(jsonb_build_object('webhook',"
                " d.webhook, 'attempts', d.attempts, 'delivered_at', d.delivered_at,"
                " 'last_error', d.last_error, 'last_status', d.last_status,"
                " 'next_attempt_at', d.next_attempt_at) ORDER BY d.webhook)"
                " FROM pgwarden.approval_delivery d WHERE d.event_id = e.id), '[]'))::text AS e"
                " FROM pgwarden.approval_event e WHERE e.request_id = $1 ORDER BY e.id",
                ["bigint"]), [rid])]
        out.append(json.dumps(d, default=str))
    return out


# -- helpers ----------------------------------------------------------------------------------

def _refuse(sqlstate: str, message: str) -> str:
    """A refused review, for pgwarden._raise (which needs every field)."""
    return json.dumps({"sqlstate": sqlstate, "message": f"pgwarden: {message}", "rule": "",
                       "detail": "Nothing was changed.",
                       "hint": "`pgwarden approvals list` shows the requests you may review."})


def _row(plpy: Any, rid: int) -> dict[str, Any]:
    return _public(plpy.execute(plpy.prepare(_SELECT + " WHERE r.id = $1", ["bigint"]),
                                [rid])[0])


def _public(r: Any) -> dict[str, Any]:
    d = {c: r[c] for c in _PUBLIC}
    d["key_sample"] = json.loads(d["key_sample"]) if d["key_sample"] else None
    return d


def _event(plpy: Any, row: dict[str, Any], event: str) -> None:
    """Queue `event` for the relay, with the request as it is now, and wake the relay (NOTIFY
    is delivered when this transaction commits, and carries only the event id: the relay
    reads everything else from the table, so a forged NOTIFY cannot make it send anything)."""
    now = plpy.execute("SELECT current_database()::text AS d, clock_timestamp()::text AS t")[0]
    payload = json.dumps({"event": f"approval.{event}", "database": now["d"], "at": now["t"],
                          "request": row}, default=str)
    eid = plpy.execute(plpy.prepare(
        "INSERT INTO pgwarden.approval_event (request_id, event, payload)"
        " VALUES ($1, $2, $3::jsonb) RETURNING id", ["bigint", "text", "text"]),
        [row["id"], event, payload])[0]["id"]
    plpy.execute(plpy.prepare("SELECT pg_notify($1, $2)", ["text", "text"]),
                 [NOTIFY_CHANNEL, str(eid)])

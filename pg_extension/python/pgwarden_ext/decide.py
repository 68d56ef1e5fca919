"""From a rule's action to a ledger record and, when the statement must not go on, an error.

Actions (policy.ACTIONS):

    off      the rule is not evaluated: nothing recorded
    allow    the statement goes on; an "allowed" record is staged in its transaction
    block    an autonomous "blocked" record, then SQLSTATE PW001
    approve  a matching one-time grant lets the statement go on ("approval_used"); without
             one, an approval request and an autonomous "approval_required" record, then
             SQLSTATE PW002 naming the request (see `approvals`)

Errors are returned as a dict that the PL/pgSQL caller raises with
``RAISE EXCEPTION USING ERRCODE, MESSAGE, DETAIL, HINT, CONSTRAINT = rule, SCHEMA, TABLE``
(``pgwarden._raise``): the capture agent reads the rule from the ErrorResponse constraint-name
field (docs/events.md, "pgwarden's SQLSTATEs").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgwarden_ext import ledger, lexer

SQLSTATE = {"block": "PW001", "approve": "PW002"}
DECISION = {"allow": "allowed", "block": "blocked", "approve": "approval_required"}


@dataclass
class Event:
    """What is being decided: `op` is the SQL command (UPDATE, DELETE, TRUNCATE, DROP, ALTER
    TABLE ...), `object_type` and `schema`/`name` the object, `reason` one sentence saying what
    the rule saw, `rows` the rows affected when known, `query` the client's statement text
    (normalized before it is recorded), `current_user` the effective role of the caller."""

    op: str
    object_type: str
    schema: str | None
    name: str
    reason: str
    query: str
    current_user: str
    rows: int | None = None
    protect: str | None = None
    principal: str | None = None
    relid: int | None = None  # the relation a row write fired on (approvals measure it)

    @property
    def object(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


def decide(plpy: Any, st: Any, rule: str, action: str, ev: Event,
           effect: dict[str, Any] | None = None,
           firing: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Apply `action` of `rule` to `ev`: record it, and return the error to raise (or None).
    For approve: `effect` is what the statement changes (None: not measured yet) and `firing`
    what the rules of this one trigger firing share (a grant covers all of them)."""
    if action == "off":
        return None
    if action == "approve":
        from pgwarden_ext import approvals

        return approvals.require(plpy, st, rule, ev, effect, {} if firing is None else firing)
    query = ev.query or ""
    # with standard_conforming_strings off, backslashes end strings elsewhere: normalize as the
    # server reads the text, or a literal could reach the ledger
    conforming = "\\" not in query or plpy.execute(
        "SELECT pg_catalog.current_setting('standard_conforming_strings') = 'on' AS c")[0]["c"]
    statement = lexer.normalize(query, conforming)
    fingerprint = lexer.fingerprint(statement)
    if action == "allow":
        # one record per transaction, rule, object and statement shape is enough
        key = (st.xid, rule, ev.object, fingerprint)
        if st.xid is not None and key in st.noted:
            return None
        st.noted.add(key)
    payload = ledger.record(
        plpy, DECISION[action], rule=rule, action=action, op=ev.op,
        object_type=ev.object_type, object=ev.object, rows=ev.rows, reason=ev.reason,
        current_user=ev.current_user, protect=ev.protect, principal=ev.principal,
        statement=statement, fingerprint=fingerprint, xid=st.xid,
        policy_version=st.version, policy_sha256=st.sha256)
    if action == "allow":
        ledger.stage(plpy, payload)
        return None
    ledger.stage_autonomous(plpy, st, payload)
    return error(rule, action, ev, st.version, st.session.user)


def error(rule: str, action: str, ev: Event, version: int, user: str) -> dict[str, Any]:
    """The error for a blocking `action` (see module docstring)."""
    rows = "" if ev.rows is None else f" It would have affected {ev.rows} row(s)."
    entry = f' protect entry "{ev.protect}",' if ev.protect else ""
    who = f"session user {user}" + (f" (principal {ev.principal})" if ev.principal else "")
    detail = f"{ev.reason}.{rows} Policy version {version},{entry} {who}."
    message = f"pgwarden: {ev.op} on {ev.object_type} {ev.object} blocked by rule {rule}"
    hint = ("If this change is intended, ask a pgwarden admin for an exception for your role "
            f"under rule {rule} in pgwarden.yaml, or for `{rule}: approve` (just-in-time "
            "approvals). The attempt is recorded in the pgwarden ledger.")
    return {"sqlstate": SQLSTATE[action], "message": message, "detail": detail, "hint": hint,
            "rule": rule, "schema": ev.schema or "", "table": ev.name if ev.schema else ""}


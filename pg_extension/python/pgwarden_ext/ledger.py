"""Ledger records: canonical payloads, transactional and autonomous writes.

A record is one line of canonical JSON (sorted keys, no spaces, UTF-8), hashed exactly as stored.
Two write paths, both ending in ``pgwarden.ledger_staging``; the chainer
(``pgwarden.chain_pending``) later moves staged rows into the hash chain ``pgwarden.ledger``:

* `stage`: inside the caller's transaction, for decisions that let the statement go on
  ("allowed" under a rule, "policy_applied"): they exist if and only if that transaction commits;
* `stage_autonomous`: through dblink, in a separate session that commits at once, for decisions
  that abort the caller's transaction ("blocked", "approval_required"), which would otherwise be
  rolled back with it. That session then tries to chain (``pg_try_advisory_xact_lock``: it never
  waits for another chainer), so user transactions never wait on the chain head.

If the autonomous write fails (dblink cannot connect: see pg_hba.conf, ``pgwarden db install``),
the decision is still enforced and the record goes to the server log with a WARNING.
"""

from __future__ import annotations

import json
from typing import Any

RECORD_VERSION = 1


def canonical(record: dict[str, Any]) -> str:
    """The exact text stored and hashed for `record`."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def session_fields(plpy: Any) -> dict[str, Any]:
    """Who and where: session_user, backend pid and start, application_name, client address
    (NULL over a unix socket), and the attested identity (issue 4; NULL until it lands)."""
    row = plpy.execute(
        "SELECT session_user::text AS session_user, a.pid, a.backend_start::text,"
        " a.application_name, host(a.client_addr) AS client_addr,"
        " pgwarden.session_identity() AS identity"
        " FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid()")[0]
    return dict(row)


def record(plpy: Any, kind: str, **fields: Any) -> str:
    """A canonical record of `kind` ("blocked", "allowed", "policy_applied", ...) with the
    session fields and a server timestamp."""
    ts = plpy.execute("SELECT pg_catalog.clock_timestamp()::text AS ts")[0]["ts"]
    body = {"v": RECORD_VERSION, "kind": kind, "ts": ts, **session_fields(plpy), **fields}
    return canonical(body)


def stage(plpy: Any, payload: str) -> None:
    """Stage `payload` in the current transaction."""
    plpy.execute(plpy.prepare(
        "INSERT INTO pgwarden.ledger_staging(payload) VALUES ($1)", ["text"]), [payload])


def autonomous_conninfo(plpy: Any) -> str:
    """libpq conninfo of the autonomous session: pgwarden.settings' autonomous_conninfo and
    this database. Built here, not by SQL: a SQL function body is parsed with the session's
    standard_conforming_strings, and a session that turns it off would break a backslash
    literal in it, and with it the records of its blocked statements."""
    row = plpy.execute(
        "SELECT s.value AS base, pg_catalog.current_database()::text AS db"
        " FROM pgwarden.settings s WHERE s.name = 'autonomous_conninfo'")[0]
    db = row["db"].replace("\\", "\\\\").replace("'", "\\'")
    return (f"{row['base']} dbname='{db}' application_name=pgwarden_ledger"
            " options='-c lock_timeout=5s -c statement_timeout=30s'")


def autonomous(plpy: Any, st: Any, sql: str) -> str | None:
    """Run `sql` (one statement returning one text column, built by pgwarden: never with a
    session's input unquoted) in the autonomous session, which commits at once; its value.
    Raises plpy.SPIError or RuntimeError when dblink cannot do it."""
    if st.dblink_schema is None:
        rows = plpy.execute("SELECT extnamespace::regnamespace::text AS s"
                            " FROM pg_catalog.pg_extension WHERE extname = 'dblink'")
        if not rows:
            raise RuntimeError("extension dblink is not installed")
        st.dblink_schema = rows[0]["s"]
    conninfo = autonomous_conninfo(plpy)
    return plpy.execute(
        f"SELECT r FROM {st.dblink_schema}.dblink({plpy.quote_literal(conninfo)},"
        f" {plpy.quote_literal(sql)}) AS t(r text)")[0]["r"]


def stage_autonomous(plpy: Any, st: Any, payload: str) -> bool:
    """Stage `payload` in its own committed transaction (dblink); True on success."""
    try:
        autonomous(plpy, st, "SELECT pgwarden._stage_and_chain("
                   + plpy.quote_literal(payload) + ")::text")
        return True
    except (plpy.SPIError, RuntimeError) as e:
        plpy.warning(f"pgwarden: could not write the ledger record autonomously ({e}); "
                     f"record: {payload}")
        return False

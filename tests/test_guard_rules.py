"""Each guardrail blocks its case and allows its legitimate neighbour, over the simple protocol
(psql, one Query message) and the extended protocol (psycopg with bind parameters). After every
block, a snapshot of the data and structure of the app schema is unchanged, the error carries
SQLSTATE PW001 with the rule in the constraint-name field, and the ledger holds the record.

Cluster: agent.db.testing.GuardedCluster (schema and policy: TEST_POLICY there).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from agent.db.testing import GuardedCluster, Outcome

pytestmark = pytest.mark.pg
PROTOCOLS = ["simple", "extended"]


def inline(sql: str, params: tuple[Any, ...]) -> str:
    """The statement with literals instead of placeholders (what a psql user types)."""
    return sql % tuple(f"'{p}'" if isinstance(p, str) else str(p) for p in params)


def run(gc: GuardedCluster, db: str, user: str, protocol: str, sql: str,
        params: tuple[Any, ...] = ()) -> Outcome:
    if protocol == "simple":
        return gc.run_psql(db, user, inline(sql, params))
    return gc.run_extended(db, user, sql, params, prepare=True)


def assert_blocked(gc: GuardedCluster, db: str, rule: str, user: str, protocol: str, sql: str,
                   params: tuple[Any, ...] = ()) -> Outcome:
    before = gc.snapshot(db)
    out = run(gc, db, user, protocol, sql, params)
    assert out.sqlstate == "PW001" and out.rule == rule, out
    assert f"rule {rule}" in out.message
    assert gc.snapshot(db) == before, "a blocked statement changed something"
    last = [r for r in gc.ledger(db) if r["kind"] == "blocked"][-1]
    assert last["rule"] == rule and last["session_user"] == user
    return out


def assert_allowed(gc: GuardedCluster, db: str, user: str, protocol: str, sql: str,
                   params: tuple[Any, ...] = ()) -> Outcome:
    out = run(gc, db, user, protocol, sql, params)
    assert out.ok, out
    return out


# -- require_where ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_delete_without_where(gc: GuardedCluster, db: str, protocol: str) -> None:
    assert_blocked(gc, db, "require_where", "app_rw", protocol, "DELETE FROM app.orders")
    assert_allowed(gc, db, "app_rw", protocol, "DELETE FROM app.orders WHERE id = %s", (5,))
    assert gc.sql(db, "SELECT count(*) FROM app.orders WHERE id = 5") == [(0,)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_update_with_tautological_where(gc: GuardedCluster, db: str, protocol: str) -> None:
    assert_blocked(gc, db, "require_where", "app_rw", protocol,
                   "UPDATE app.orders SET status = %s WHERE %s = %s", ("x", 1, 1))
    assert_blocked(gc, db, "require_where", "app_rw", protocol,
                   "UPDATE app.orders SET status = %s WHERE id = id", ("x",))
    assert_allowed(gc, db, "app_rw", protocol,
                   "UPDATE app.orders SET status = %s WHERE id = %s", ("x", 7))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_merge_without_restricting_on(gc: GuardedCluster, db: str, protocol: str) -> None:
    assert_blocked(gc, db, "require_where", "app_rw", protocol,
                   "MERGE INTO app.orders o USING (SELECT %s AS k) s ON true"
                   " WHEN MATCHED THEN DELETE", (1,))
    assert_allowed(gc, db, "app_rw", protocol,
                   "MERGE INTO app.orders o USING (SELECT %s AS k) s ON o.id = s.k"
                   " WHEN MATCHED THEN DELETE", (9,))


# -- max_rows --------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_statement_row_limit(gc: GuardedCluster, db: str, protocol: str) -> None:
    out = assert_blocked(gc, db, "max_rows", "app_rw", protocol,
                         "UPDATE app.orders SET status = %s WHERE id <= %s", ("x", 501))
    assert out.ok is False
    assert_allowed(gc, db, "app_rw", protocol,
                   "UPDATE app.orders SET status = %s WHERE id <= %s", ("x", 499))
    assert_allowed(gc, db, "app_rw", protocol,
                   "UPDATE app.orders SET status = %s WHERE id > %s AND id <= %s",
                   ("y", 1000, 1500))  # exactly 500: the limit itself is allowed
    assert gc.sql(db, "SELECT count(*) FROM app.orders WHERE status IN ('x', 'y')") == [(999,)]


def test_transaction_row_limit_simple(gc: GuardedCluster, db: str) -> None:
    batch = "UPDATE app.orders SET status = 'b' WHERE id > {} AND id <= {};"
    four = "".join(batch.format(i * 450, (i + 1) * 450) for i in range(4))
    five = "".join(batch.format(i * 450, (i + 1) * 450) for i in range(5))
    before = gc.snapshot(db)
    out = gc.run_psql(db, "app_rw", f"BEGIN; {five} COMMIT;")
    assert out.sqlstate == "PW001" and out.rule == "max_rows", out
    assert gc.snapshot(db) == before
    assert "per transaction" in [r for r in gc.ledger(db) if r["kind"] == "blocked"][-1]["reason"]
    assert gc.run_psql(db, "app_rw", f"BEGIN; {four} COMMIT;").ok


def test_transaction_row_limit_extended(gc: GuardedCluster, db: str) -> None:
    before = gc.snapshot(db)
    with psycopg.connect(gc.dsn(db, "app_rw")) as conn:
        with pytest.raises(psycopg.Error) as e:
            for i in range(5):
                conn.execute("UPDATE app.orders SET status = %s WHERE id > %s AND id <= %s",
                             ("b", i * 450, (i + 1) * 450), prepare=True)
        assert e.value.sqlstate == "PW001" and e.value.diag.constraint_name == "max_rows"
    assert gc.snapshot(db) == before


# -- no_truncate -----------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_truncate(gc: GuardedCluster, db: str, protocol: str) -> None:
    assert_blocked(gc, db, "no_truncate", "app_rw", protocol, "TRUNCATE app.orders")
    assert_blocked(gc, db, "no_truncate", "app_rw", protocol,
                   "TRUNCATE app.scratch, app.customers CASCADE")
    assert_allowed(gc, db, "app_rw", protocol, "TRUNCATE app.scratch")
    assert gc.sql(db, "SELECT count(*) FROM app.scratch") == [(0,)]


# -- no_drop ---------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "DROP TABLE app.orders CASCADE",
    "DROP VIEW app.big_orders",
    "DROP SEQUENCE app.invoice_seq",
    "DROP FUNCTION app.order_total(int)",
    "DROP SCHEMA app CASCADE",
    "ALTER TABLE app.customers DROP COLUMN note",
    "DROP TABLE app.scratch, app.events_2026",
])
def test_drop_protected(gc: GuardedCluster, db: str, protocol: str, sql: str) -> None:
    assert_blocked(gc, db, "no_drop", "app_owner", protocol, sql)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_drop_neighbours(gc: GuardedCluster, db: str, protocol: str) -> None:
    assert_allowed(gc, db, "app_owner", protocol, "DROP TABLE app.scratch")
    assert_allowed(gc, db, "app_owner", protocol, "ALTER TABLE app.orders ADD COLUMN x int")
    assert_blocked(gc, db, "no_drop", "app_owner", protocol, "ALTER TABLE app.orders DROP COLUMN x")
    assert_allowed(gc, db, "app_owner", protocol, "ALTER TABLE app.events ADD COLUMN x int")
    # the migrations principal may drop: allowed under the rule, and recorded
    gc.sql(db, "GRANT app_owner TO migrator")
    assert_allowed(gc, db, "migrator", protocol, "DROP VIEW app.big_orders")
    rec = [r for r in gc.ledger(db) if r["kind"] == "allowed"][-1]
    assert (rec["rule"], rec["object"], rec["principal"]) == ("no_drop", "app.big_orders",
                                                               "migrations")


# -- protected_columns -----------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_protected_columns(gc: GuardedCluster, db: str, protocol: str) -> None:
    assert_blocked(gc, db, "protected_columns", "app_rw", protocol,
                   "UPDATE app.customers SET id = id + %s WHERE id = %s", (10000, 3))
    assert_blocked(gc, db, "protected_columns", "app_rw", protocol,
                   "UPDATE app.customers SET api_key = %s WHERE id = %s", ("k", 3))
    assert_blocked(gc, db, "protected_columns", "app_rw", protocol,
                   "INSERT INTO app.customers (id, email) VALUES (%s, %s)"
                   " ON CONFLICT (id) DO UPDATE SET api_key = EXCLUDED.email", (3, "x"))
    assert_allowed(gc, db, "app_rw", protocol,
                   "UPDATE app.customers SET note = %s, id = id WHERE id = %s", ("vip", 3))
    assert gc.sql(db, "SELECT note FROM app.customers WHERE id = 3") == [("vip",)]


# -- opaque_write ----------------------------------------------------------------------------

WIPE = """
CREATE FUNCTION app.wipe_orders(n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN DELETE FROM app.orders WHERE id <= n; END $$;
GRANT EXECUTE ON FUNCTION app.wipe_orders(int) TO app_rw, etl;
"""


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_opaque_function_write(gc: GuardedCluster, db: str, protocol: str) -> None:
    gc.sql(db, "SET ROLE app_owner;" + WIPE)
    assert_blocked(gc, db, "opaque_write", "app_rw", protocol, "SELECT app.wipe_orders(%s)", (3,))
    # etl may write through code pgwarden cannot see, but only 50 rows per statement
    assert_allowed(gc, db, "etl", protocol, "SELECT app.wipe_orders(%s)", (10,))
    assert_blocked(gc, db, "max_rows", "etl", protocol, "SELECT app.wipe_orders(%s)", (100,))
    rec = [r for r in gc.ledger(db) if r["kind"] == "allowed"][-1]
    assert (rec["rule"], rec["principal"], rec["rows"]) == ("opaque_write", "etl", 10)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_opaque_do_block(gc: GuardedCluster, db: str, protocol: str) -> None:
    assert_blocked(gc, db, "opaque_write", "app_rw", protocol,
                   "DO $$ BEGIN EXECUTE 'DELETE FROM app.orders WHERE id = ' || 11; END $$")


# -- no_rewrite ------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rewrite(gc: GuardedCluster, db: str, protocol: str) -> None:
    assert_blocked(gc, db, "no_rewrite", "app_owner", protocol,
                   "ALTER TABLE app.customers ALTER COLUMN note TYPE int USING 0")
    assert_allowed(gc, db, "app_owner", protocol,
                   "ALTER TABLE app.scratch ALTER COLUMN v TYPE bigint USING 0")


# -- the error itself ------------------------------------------------------------------------

def test_error_fields_on_the_wire(gc: GuardedCluster, db: str) -> None:
    with psycopg.connect(gc.dsn(db, "app_rw")) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("DELETE FROM app.orders WHERE %s", (True,))
    d = e.value.diag
    assert (d.sqlstate, d.constraint_name, d.schema_name, d.table_name) == \
        ("PW001", "require_where", "app", "orders")
    assert d.message_primary == "pgwarden: DELETE on table app.orders blocked by rule require_where"
    assert "3000 row(s)" in d.message_detail and "session user app_rw" in d.message_detail
    assert "approval" in d.message_hint


def test_blocked_record_contents(gc: GuardedCluster, db: str) -> None:
    gc.run_extended(db, "app_rw", "UPDATE app.customers SET email = %s", ("leak@example.com",))
    rec = [r for r in gc.ledger(db) if r["kind"] == "blocked"][-1]
    assert rec["statement"] == "UPDATE app.customers SET email = $1"
    assert "leak" not in str(rec)
    for key in ("session_user", "current_user", "pid", "backend_start", "application_name",
                "client_addr", "fingerprint", "statement", "object", "rows", "rule",
                "policy_version", "policy_sha256", "identity", "xid", "ts"):
        assert key in rec, key
    assert rec["rows"] == 1000 and rec["object"] == "app.customers"
    assert rec["policy_version"] == 1 and rec["identity"] is None

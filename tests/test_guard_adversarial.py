"""Adversarial suite: one test per attempt to get around the guardrails or the ledger
(../shared/reference/pg-extension.md sections 5 and 7.B/7.D, plus our own). Every attempt must
fail with a pgwarden or privilege error and leave the data and structure of the app schema
exactly as they were (`GuardedCluster.snapshot`).

Roles (agent/db/testing.py): app_owner owns the app schema; app_rw reads and writes; migrator
and etl are principals with exceptions in TEST_POLICY.
"""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from agent.db.testing import GuardedCluster, Outcome
from agent.pgcluster import PG_BIN

pytestmark = pytest.mark.pg


def attempt(gc: GuardedCluster, db: str, user: str, sql: str,
            expect: tuple[str, str | None] = ("PW001", None)) -> Outcome:
    """Run `sql` (one psql -c, simple protocol) and assert it failed as `expect`
    (SQLSTATE, rule or None for any) with nothing changed."""
    before = gc.snapshot(db)
    out = gc.run_psql(db, user, sql)
    assert not out.ok, f"bypass worked: {sql!r} -> {out}"
    assert out.sqlstate == expect[0], out
    if expect[1]:
        assert out.rule == expect[1], out
    assert gc.snapshot(db) == before, f"{sql!r} changed something"
    return out


# -- switching the guards off -----------------------------------------------------------------

def test_session_replication_role_replica_superuser(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "postgres", "SET session_replication_role = replica;"
                                "DELETE FROM app.orders", ("PW001", "require_where"))
    attempt(gc, db, "postgres", "SET session_replication_role = replica;"
                                "DROP TABLE app.orders CASCADE", ("PW001", "no_drop"))
    attempt(gc, db, "postgres", "SET session_replication_role = replica;"
                                "TRUNCATE app.orders", ("PW001", "no_truncate"))


def test_session_replication_role_granted_parameter(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "GRANT SET ON PARAMETER session_replication_role TO app_rw")
    try:
        attempt(gc, db, "app_rw", "SET session_replication_role = replica;"
                                  "UPDATE app.orders SET status = 'x'",
                ("PW001", "require_where"))
        found = gc.sql(db, "SELECT kind, object FROM pgwarden.drift()"
                           " WHERE kind = 'parameter_grant'")
        assert found == [("parameter_grant", "session_replication_role")]
    finally:
        gc.sql(db, "REVOKE SET ON PARAMETER session_replication_role FROM app_rw")


@pytest.mark.parametrize("sql,expect", [
    ("ALTER TABLE app.orders DISABLE TRIGGER zz_pgwarden_delete", ("PW001", "guard_integrity")),
    ("ALTER TABLE app.orders DISABLE TRIGGER USER", ("PW001", "guard_integrity")),
    # ALL includes the foreign-key system triggers: PostgreSQL itself refuses the owner
    ("ALTER TABLE app.orders DISABLE TRIGGER ALL", ("42501", None)),
    ("ALTER TABLE app.orders ENABLE TRIGGER zz_pgwarden_delete",  # ALWAYS -> ORIGIN
     ("PW001", "guard_integrity")),
    ("ALTER TABLE app.orders ENABLE REPLICA TRIGGER zz_pgwarden_truncate",
     ("PW001", "guard_integrity")),
    ("DROP TRIGGER zz_pgwarden_delete ON app.orders", ("PW001", "guard_integrity")),
    ("DROP TRIGGER zz_pgwarden_columns ON app.customers", ("PW001", "guard_integrity")),
])
def test_owner_cannot_disable_or_drop_guard_triggers(gc: GuardedCluster, db: str, sql: str,
                                                     expect: tuple[str, str | None]) -> None:
    attempt(gc, db, "app_owner", sql + "; DELETE FROM app.orders", expect)


def test_superuser_disabling_a_guard_trigger_is_recorded_and_drift_reports_it(
        gc: GuardedCluster, db: str) -> None:
    assert gc.run_psql(db, "postgres",
                       "ALTER TABLE app.orders DISABLE TRIGGER zz_pgwarden_delete").ok
    rec = [r for r in gc.ledger(db) if r.get("rule") == "guard_integrity"][-1]
    assert (rec["kind"], rec["session_user"]) == ("allowed", "postgres")
    found = gc.sql(db, "SELECT kind, object FROM pgwarden.drift() WHERE kind = 'guard_trigger'")
    assert found == [("guard_trigger", "app.orders")]


def test_guard_trigger_survives_rename(gc: GuardedCluster, db: str) -> None:
    out = gc.run_psql(db, "app_owner", "ALTER TRIGGER zz_pgwarden_delete ON app.orders"
                                       " RENAME TO harmless")
    assert out.ok  # renaming does not weaken it: it is known by OID
    attempt(gc, db, "app_rw", "DELETE FROM app.orders", ("PW001", "require_where"))


def test_event_triggers_cannot_be_touched_by_non_superusers(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_owner", "ALTER EVENT TRIGGER pgwarden_sql_drop DISABLE",
            ("42501", None))
    attempt(gc, db, "app_owner", "DROP EVENT TRIGGER pgwarden_sql_drop", ("42501", None))
    attempt(gc, db, "app_owner", "DROP EXTENSION pgwarden", ("42501", None))
    attempt(gc, db, "app_owner", "ALTER EXTENSION pgwarden DROP FUNCTION pgwarden.tg_write()",
            ("42501", None))


def test_pgwarden_internals_are_not_callable(gc: GuardedCluster, db: str) -> None:
    for sql in ("SELECT pgwarden.unguard_all()", "SELECT pgwarden.drift()",
                "SELECT pgwarden.apply_policy('{}', '', '')",
                "DELETE FROM pgwarden.guard_trigger", "DELETE FROM pgwarden.protected",
                "UPDATE pgwarden.policy_head SET version = 0",
                "SELECT pgwarden._stage_and_chain('{}')",
                "INSERT INTO pgwarden.classified VALUES ('\\x00', 'x', '{}')",
                "SELECT pgwarden._remember_classified('x', '{}')",
                "SELECT pgwarden_dblink.dblink_exec('dbname=postgres', 'SELECT 1')"):
        attempt(gc, db, "app_rw", sql, ("42501", None))


# -- renames, partitions, inheritance --------------------------------------------------------

def test_rename_then_drop(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_owner", "ALTER TABLE app.orders RENAME TO orders_old;"
                                 "DROP TABLE app.orders_old CASCADE", ("PW001", "no_drop"))
    assert gc.run_psql(db, "app_owner", "ALTER TABLE app.orders RENAME TO orders_old").ok
    attempt(gc, db, "app_owner", "DROP TABLE app.orders_old CASCADE", ("PW001", "no_drop"))
    attempt(gc, db, "app_rw", "DELETE FROM app.orders_old", ("PW001", "require_where"))


def test_set_schema_then_delete(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "CREATE SCHEMA other AUTHORIZATION app_owner; GRANT USAGE ON SCHEMA other TO app_rw")
    assert gc.run_psql(db, "app_owner", "ALTER TABLE app.scratch SET SCHEMA other").ok
    assert gc.run_psql(db, "app_owner", "ALTER TABLE app.customers SET SCHEMA other").ok
    before = gc.snapshot(db)
    out = gc.run_psql(db, "app_rw", "DELETE FROM other.customers")
    assert out.rule == "require_where" and gc.snapshot(db) == before


def test_write_straight_to_a_partition(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_rw", "DELETE FROM app.events_2026", ("PW001", "require_where"))
    attempt(gc, db, "app_rw", "TRUNCATE app.events", ("PW001", "no_truncate"))
    # partitions add up in their partitioned table: 3 x 800 rows > 2000 per transaction
    updates = "".join(f"UPDATE app.events_{y} SET kind = 'x{i}' WHERE id > 0;"
                      for i in range(3) for y in (2025, 2026))
    attempt(gc, db, "app_rw", f"BEGIN; {updates} COMMIT;", ("PW001", "max_rows"))


def test_new_partition_is_guarded(gc: GuardedCluster, db: str) -> None:
    assert gc.run_psql(db, "app_owner",
                       "CREATE TABLE app.events_2027 PARTITION OF app.events"
                       " FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');"
                       "INSERT INTO app.events SELECT g, DATE '2027-03-01', 'n'"
                       " FROM generate_series(1, 10) g").ok
    attempt(gc, db, "app_owner", "DELETE FROM app.events_2027", ("PW001", "require_where"))
    attempt(gc, db, "app_owner", "DROP TABLE app.events_2027", ("PW001", "no_drop"))
    rec = [r for r in gc.ledger(db) if r["kind"] == "object_guarded"]
    assert [r["object"] for r in rec] == ["app.events_2027"]


def test_attached_partition_is_guarded(gc: GuardedCluster, db: str) -> None:
    assert gc.run_psql(db, "app_owner",
                       "CREATE TABLE app.ev_old (LIKE app.events);"
                       "INSERT INTO app.ev_old SELECT g, DATE '2024-05-01', 'o'"
                       " FROM generate_series(1, 10) g;"
                       "ALTER TABLE app.events ATTACH PARTITION app.ev_old"
                       " FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')").ok
    attempt(gc, db, "app_owner", "DELETE FROM app.ev_old", ("PW001", "require_where"))


def test_detach_then_drop_partition(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_owner", "ALTER TABLE app.events DETACH PARTITION app.events_2025;"
                                 "DROP TABLE app.events_2025", ("PW001", "no_drop"))


def test_inheritance_child_is_guarded(gc: GuardedCluster, db: str) -> None:
    assert gc.run_psql(db, "app_owner",
                       "CREATE TABLE app.orders_archive () INHERITS (app.orders);"
                       "INSERT INTO app.orders_archive SELECT * FROM app.orders LIMIT 5").ok
    attempt(gc, db, "app_owner", "DELETE FROM app.orders_archive", ("PW001", "require_where"))


# -- statement shapes -------------------------------------------------------------------------

def test_fk_cascade_mass_delete(gc: GuardedCluster, db: str) -> None:
    # 200 customers is under the limit; their 600 orders, deleted by the cascade, are not
    out = attempt(gc, db, "app_rw", "DELETE FROM app.customers WHERE id <= 200",
                  ("PW001", "max_rows"))
    assert "app.orders" in out.message


def test_fk_cascade_from_unrestricted_parent_delete(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "CREATE TABLE app.notes (id int PRIMARY KEY, order_id int REFERENCES app.orders"
               " ON DELETE CASCADE); INSERT INTO app.notes SELECT g, g FROM generate_series(1,9) g;"
               "GRANT ALL ON app.notes TO app_rw")
    gc.sql(db, "CREATE TABLE app.parent (id int PRIMARY KEY); INSERT INTO app.parent VALUES (1);"
               "ALTER TABLE app.orders ADD COLUMN p int REFERENCES app.parent ON DELETE CASCADE;"
               "UPDATE app.orders SET p = 1 WHERE id <= 3; GRANT ALL ON app.parent TO app_rw")
    # app.parent is not guarded; the cascade into app.orders comes from a DELETE without WHERE
    attempt(gc, db, "app_rw", "DELETE FROM app.parent", ("PW001", "require_where"))
    # the same cascade from a restricted DELETE is fine
    assert gc.run_psql(db, "app_rw", "DELETE FROM app.parent WHERE id = 1").ok


def test_batching_under_the_statement_limit(gc: GuardedCluster, db: str) -> None:
    batches = " ".join(f"DELETE FROM app.orders WHERE id > {i * 300} AND id <= {(i + 1) * 300};"
                       for i in range(7))
    attempt(gc, db, "app_rw", f"BEGIN; {batches} COMMIT;", ("PW001", "max_rows"))


def test_savepoint_rollback_does_not_reset_the_transaction_count(gc: GuardedCluster,
                                                                  db: str) -> None:
    batches = " ".join(f"UPDATE app.orders SET status = 's' WHERE id > {i * 450}"
                       f" AND id <= {(i + 1) * 450};" for i in range(4))
    attempt(gc, db, "app_rw", f"BEGIN; SAVEPOINT a; {batches} ROLLBACK TO SAVEPOINT a;"
                              "UPDATE app.orders SET status = 's' WHERE id <= 450; COMMIT;",
            ("PW001", "max_rows"))


def test_batching_in_a_do_loop(gc: GuardedCluster, db: str) -> None:
    # etl may write through opaque code (50 rows a statement), but not 2000+ in a transaction
    attempt(gc, db, "etl", "DO $$ BEGIN FOR i IN 0..59 LOOP DELETE FROM app.orders"
                           " WHERE id > i * 40 AND id <= (i + 1) * 40; END LOOP; END $$",
            ("PW001", "max_rows"))


def test_multi_statement_string(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_rw", "DELETE FROM app.orders WHERE id = 1; DELETE FROM app.orders",
            ("PW001", "require_where"))
    attempt(gc, db, "app_rw", "SELECT 1; UPDATE app.orders SET status = 'x' /* WHERE id=1 */",
            ("PW001", "require_where"))


def test_comment_and_string_hiding_a_where(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_rw", "/* WHERE id = 1 */ delete\nfrom app.orders -- WHERE id = 1",
            ("PW001", "require_where"))
    attempt(gc, db, "app_rw", "DELETE FROM app.orders RETURNING 'WHERE id = 1'",
            ("PW001", "require_where"))


def test_cte_wrapped_delete(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_rw", "WITH d AS (DELETE FROM app.orders RETURNING *)"
                              " SELECT count(*) FROM d", ("PW001", "require_where"))


def test_upsert_mass_update(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_rw", "INSERT INTO app.orders (id, customer_id, amount)"
                              " SELECT g, 1, 0 FROM generate_series(1, 600) g"
                              " ON CONFLICT (id) DO UPDATE SET status = 'u'",
            ("PW001", "max_rows"))


def test_explain_analyze_runs_the_delete(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_rw", "EXPLAIN ANALYZE DELETE FROM app.orders WHERE id = 1",
            ("PW001", "opaque_write"))


def test_dynamic_sql_in_do_block(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_rw", "DO $$ BEGIN EXECUTE format('DELETE FROM %I.%I', 'app', 'orders');"
                              " END $$", ("PW001", "opaque_write"))


def test_sql_prepared_statement(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_rw", "PREPARE p AS DELETE FROM app.orders; EXECUTE p",
            ("PW001", "require_where"))
    assert gc.run_psql(db, "app_rw", "PREPARE q (int) AS DELETE FROM app.orders WHERE id = $1;"
                                     " EXECUTE q(5)").ok


def test_pgbench_prepared_protocol(gc: GuardedCluster, db: str, tmp_path_factory) -> None:
    script = tmp_path_factory.mktemp("pgbench") / "wipe.sql"
    script.write_text("\\set s 1\nUPDATE app.orders SET status = 'b' WHERE :s = :s;\n")
    script.chmod(0o644)
    script.parent.chmod(0o755)
    before = gc.snapshot(db)
    p = subprocess.run([str(PG_BIN / "pgbench"), "-n", "-M", "prepared", "-t", "2", "-f",
                        str(script), gc.dsn(db, "app_rw")], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and "PW001" in p.stderr + p.stdout or "blocked by rule" in p.stderr
    assert gc.snapshot(db) == before


def test_security_definer_wrapper(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "SET ROLE app_owner; CREATE FUNCTION app.purge() RETURNS void LANGUAGE sql"
               " SECURITY DEFINER SET search_path = app AS $$ DELETE FROM orders $$;"
               "GRANT EXECUTE ON FUNCTION app.purge() TO app_rw")
    attempt(gc, db, "app_rw", "SELECT app.purge()", ("PW001", "opaque_write"))
    rec = [r for r in gc.ledger(db) if r["kind"] == "blocked"][-1]
    assert (rec["session_user"], rec["current_user"]) == ("app_rw", "app_owner")


def test_function_with_side_effects_in_where(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "SET ROLE app_owner; CREATE FUNCTION app.sneaky() RETURNS boolean LANGUAGE plpgsql"
               " AS $$ BEGIN DELETE FROM app.orders WHERE amount >= 0; RETURN true; END $$;"
               "GRANT EXECUTE ON FUNCTION app.sneaky() TO app_rw")
    attempt(gc, db, "app_rw", "DELETE FROM app.orders WHERE id = 1 AND app.sneaky()",
            ("PW001", "opaque_write"))


def test_trigger_on_another_table(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "SET ROLE app_owner; CREATE FUNCTION app.tg() RETURNS trigger LANGUAGE plpgsql AS"
               " $$ BEGIN DELETE FROM app.orders WHERE amount >= 0; RETURN NULL; END $$;"
               "CREATE TRIGGER t AFTER DELETE ON app.scratch FOR EACH STATEMENT"
               " EXECUTE FUNCTION app.tg()")
    attempt(gc, db, "app_rw", "DELETE FROM app.scratch WHERE id = 1", ("PW001", "opaque_write"))


def test_updatable_view_over_guarded_table(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "SET ROLE app_owner; CREATE VIEW app.all_orders AS SELECT * FROM app.orders;"
               "GRANT ALL ON app.all_orders TO app_rw")
    attempt(gc, db, "app_rw", "DELETE FROM app.all_orders WHERE id = 1",
            ("PW001", "opaque_write"))


def test_rewrite_rule_redirecting_writes(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_owner", "CREATE RULE r AS ON DELETE TO app.scratch"
                                 " DO ALSO DELETE FROM app.orders", ("PW001", "guard_integrity"))


def test_set_role_to_an_exempt_role(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "GRANT migrator TO app_rw")
    attempt(gc, db, "app_rw", "SET ROLE migrator; DELETE FROM app.orders",
            ("PW001", "require_where"))  # policies key on session_user


def test_forged_identity_settings(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_rw", "SET application_name = 'migrator';"
                              "SET pgwarden.identity = 'migrator'; DELETE FROM app.orders",
            ("PW001", "require_where"))


def test_write_all_data_member_is_still_guarded(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "GRANT pg_write_all_data TO etl")
    try:
        attempt(gc, db, "etl", "DELETE FROM app.customers", ("PW001", "require_where"))
        kinds = [r[0] for r in gc.sql(db, "SELECT kind FROM pgwarden.drift()")]
        assert "write_all_data" in kinds
    finally:
        gc.sql(db, "REVOKE pg_write_all_data FROM etl")


# -- shadowing and search_path --------------------------------------------------------------

def test_temp_table_and_function_shadowing(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "app_rw",
            "CREATE TEMP TABLE pgwarden_old (id int);"
            "CREATE FUNCTION pg_temp.count(anyelement) RETURNS bigint LANGUAGE sql AS 'SELECT 0';"
            "CREATE TEMP TABLE orders (id int); SET search_path = pg_temp, app;"
            "DELETE FROM app.orders", ("PW001", "require_where"))


def test_search_path_hijack(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "CREATE SCHEMA evil AUTHORIZATION app_rw")
    attempt(gc, db, "app_rw",
            "CREATE FUNCTION evil.current_query() RETURNS text LANGUAGE sql"
            " AS $$ SELECT 'DELETE FROM app.orders WHERE id = 1' $$;"
            "CREATE FUNCTION evil.strpos(text, text) RETURNS int LANGUAGE sql AS 'SELECT 0';"
            "SET search_path = evil, pg_catalog, app;"
            "DELETE FROM orders", ("PW001", "require_where"))


# -- other drops ----------------------------------------------------------------------------

def test_drop_owned_by(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "postgres", "DROP OWNED BY app_owner", ("PW001", "no_drop"))


def test_truncate_cascade_through_fk(gc: GuardedCluster, db: str) -> None:
    gc.sql(db, "CREATE TABLE app.child (id int REFERENCES app.customers);"
               "GRANT ALL ON app.child TO app_rw")
    attempt(gc, db, "app_rw", "TRUNCATE app.child, app.customers CASCADE",
            ("PW001", "no_truncate"))


def test_superuser_is_guarded_too(gc: GuardedCluster, db: str) -> None:
    attempt(gc, db, "postgres", "DELETE FROM app.orders", ("PW001", "require_where"))


def test_extended_protocol_helpers_cannot_be_misused(gc: GuardedCluster, db: str) -> None:
    # the runtime entry points are callable (trigger bodies run as the invoker) but only
    # decide: a forged call changes nothing and cannot lend an exception to anyone
    before = gc.snapshot(db)
    with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
        conn.execute("SELECT pgwarden._guard_write('app.orders'::regclass, 'DELETE', 1, false,"
                     " 'DELETE FROM app.orders', '1', 'migrator', 1, 0)")
        conn.execute("SELECT pgwarden._guard_write_check('app.orders'::regclass, 'DELETE', 1,"
                     " false, 'DELETE FROM app.orders WHERE id = 1', 'migrator')")
        with pytest.raises(psycopg.Error) as e:
            conn.execute("DELETE FROM app.orders")
        assert e.value.sqlstate == "PW001"
    assert gc.snapshot(db) == before


# -- the per-backend caches of the hot path (pgwarden._guard_write) ---------------------------

FORGED = [
    # a made-up transaction id, a negative row count, another principal, another policy head
    "SELECT pgwarden._guard_write('app.orders'::regclass, 'UPDATE', -100000, false,"
    " 'UPDATE app.orders SET status = 1 WHERE id = 1', '{xid}', 'migrator', 0, 0)",
    "SELECT pgwarden._guard_write('app.orders'::regclass, 'UPDATE', -100000, false,"
    " 'UPDATE app.orders SET status = 1 WHERE id = 1', '{real}', 'app_rw', {version}, {epoch})",
    "SELECT pgwarden._guard_write_check('app.orders'::regclass, 'UPDATE', -100000, false,"
    " 'UPDATE app.orders SET status = 1 WHERE id = 1', 'migrator')",
]


def test_forged_calls_cannot_reset_the_transaction_count(gc: GuardedCluster, db: str) -> None:
    # 4 x 450 rows is under the 2000-row transaction limit; after forged calls claiming other
    # transactions and negative row counts, a fifth batch must still trip it
    before = gc.snapshot(db)
    with psycopg.connect(gc.dsn(db, "app_rw")) as conn:
        with pytest.raises(psycopg.Error) as e:
            for i in range(5):
                conn.execute("UPDATE app.orders SET status = %s WHERE id > %s AND id <= %s",
                             ("b", i * 450, (i + 1) * 450), prepare=True)
                real = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
                version, epoch = conn.execute(
                    "SELECT version, epoch FROM pgwarden.policy_head").fetchone()
                for n, sql in enumerate(FORGED * 20):
                    conn.execute(sql.format(xid=int(real) + 1 + n, real=real, version=version,
                                            epoch=epoch))
        assert e.value.sqlstate == "PW001" and e.value.diag.constraint_name == "max_rows"
        assert "per transaction" in e.value.diag.message_detail
    assert gc.snapshot(db) == before


def test_forged_verdicts_do_not_stick(gc: GuardedCluster, db: str) -> None:
    # run the restricted shape, ask the full check about made-up texts, then send the
    # unrestricted statement in the same backend: it is judged by its own text
    before = gc.snapshot(db)
    with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
        conn.execute("UPDATE app.scratch SET v = 1 WHERE id = 1")
        conn.execute("UPDATE app.orders SET status = 'a' WHERE id = 1")
        before = gc.snapshot(db)
        for text, nested in (("UPDATE app.orders SET status = 'a'", False),
                             ("UPDATE app.orders SET status = 'a' WHERE id = 1", True)):
            conn.execute("SELECT pgwarden._guard_write_check('app.orders'::regclass, 'UPDATE',"
                         " 1, %s, %s, 'app_rw')", (nested, text))
        for sql in ("UPDATE app.orders SET status = 'a'", "UPDATE app.orders SET status = 'b'"):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql)
            assert e.value.diag.constraint_name == "require_where", sql
    assert gc.snapshot(db) == before


def test_no_session_state_is_read_for_the_cached_verdict(gc: GuardedCluster, db: str) -> None:
    # what a session can set (GUCs, temp tables, its search_path with its own operators)
    # changes nothing in the hot path: the restricted shape is cached, the unrestricted one is
    # still blocked in the same backend
    gc.sql(db, "CREATE SCHEMA evil AUTHORIZATION app_rw")
    before = gc.snapshot(db)
    with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
        conn.execute("UPDATE app.orders SET status = 'a' WHERE id = 1")
        conn.execute("""
            CREATE FUNCTION evil.gt(bigint, integer) RETURNS boolean LANGUAGE sql
              AS 'SELECT false';
            CREATE OPERATOR evil.> (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = evil.gt);
            CREATE FUNCTION evil.gt4(integer, integer) RETURNS boolean LANGUAGE sql
              AS 'SELECT false';
            CREATE OPERATOR evil.> (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.gt4);
            CREATE FUNCTION evil.count(anyelement) RETURNS bigint LANGUAGE sql AS 'SELECT 0';
            CREATE TEMP TABLE policy_head (version int, epoch bigint);
            SET pgwarden.verdict = 'restricted';
            SET search_path = evil, pg_temp, pg_catalog, app""")
        before = gc.snapshot(db)
        with pytest.raises(psycopg.Error) as e:
            conn.execute("UPDATE orders SET status = 'a'")
        assert e.value.diag.constraint_name == "require_where"
        with pytest.raises(psycopg.Error) as e:
            conn.execute("UPDATE app.orders SET status = 'a'")
        assert e.value.diag.constraint_name == "require_where"
    assert gc.snapshot(db) == before


def test_backslash_strings_without_standard_conforming_strings(gc: GuardedCluster,
                                                               db: str) -> None:
    # with standard_conforming_strings off, '\\' AND '' = ' is ONE string to the server: the
    # WHERE is `status = <string> OR true`, though the text reads like a restricting AND
    sql = "DELETE FROM app.orders WHERE status = '\\' AND '' = ' OR true --'"
    before = gc.snapshot(db)
    with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
        conn.execute(sql)  # standard strings: a restricting WHERE (that matches nothing)
        conn.execute("SET standard_conforming_strings = off")
        for protocol in ("extended", "simple"):
            with pytest.raises(psycopg.Error) as e:
                if protocol == "simple":
                    psycopg.ClientCursor(conn).execute(sql)
                else:
                    conn.execute(sql)
            assert e.value.diag.constraint_name == "require_where", protocol
    assert gc.snapshot(db) == before
    rec = [r for r in gc.ledger(db) if r["kind"] == "blocked"][-1]
    assert rec["statement"] == "DELETE FROM app.orders WHERE status = $1 OR true"


def test_literal_dependent_verdicts_are_not_shared(gc: GuardedCluster, db: str) -> None:
    # typed literals break the literal-free form (DATE $1), so such texts are judged with their
    # literals; a verdict that depends on them must not be reused for other literals
    before = gc.snapshot(db)
    with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
        conn.execute("DELETE FROM app.orders WHERE (DATE '2020-01-01' = DATE '2020-01-02')"
                     " OR id = 5")
        before = gc.snapshot(db)
        with pytest.raises(psycopg.Error) as e:
            conn.execute("DELETE FROM app.orders WHERE (DATE '2020-01-01' = DATE '2020-01-01')"
                         " OR id = 5")
        assert e.value.diag.constraint_name == "require_where"
    assert gc.snapshot(db) == before


def test_long_statements_are_not_confused(gc: GuardedCluster, db: str) -> None:
    # the ledger keeps 4096 characters of a normalized statement; the caches must not: two
    # texts that differ only after that point are different statements
    pad = "SELECT " + ", ".join(str(i) for i in range(1500)) + ";"
    with psycopg.connect(gc.dsn(db, "app_rw"), autocommit=True) as conn:
        conn.execute(pad + " DELETE FROM app.customers WHERE id = 5")
        before = gc.snapshot(db)
        with pytest.raises(psycopg.Error) as e:
            conn.execute(pad + " DELETE FROM app.orders")
        assert e.value.diag.constraint_name == "require_where"
    assert gc.snapshot(db) == before


def test_new_backends_share_classifications_not_sessions_input(gc: GuardedCluster,
                                                              db: str) -> None:
    # a shape classified in one backend is known to the next without sqlglot; what is shared
    # is written by pgwarden alone, each entry the summary of its own text
    assert gc.run_psql(db, "app_rw", "UPDATE app.orders SET status = 'a' WHERE id = 1").ok
    with psycopg.connect(gc.dsn(db), autocommit=True) as conn:
        conn.execute("UPDATE app.orders SET status = 'b' WHERE id = 2")
        loaded = []
        conn.add_notice_handler(lambda d: loaded.append(d.message_primary))
        conn.execute("DO LANGUAGE plpython3u $$ import sys; plpy.notice(str('sqlglot' in"
                     " sys.modules)) $$")
        assert loaded == ["False"]
        rows = conn.execute("SELECT statement, summary FROM pgwarden.classified"
                            " WHERE statement LIKE '%UPDATE app.orders%'").fetchall()
    assert [r[0].split("\n", 1)[1] for r in rows] == [
        "UPDATE app.orders SET status = $1 WHERE id = $2"]
    assert rows[0][1]["writes"] == [["UPDATE", "app", "orders", True]]

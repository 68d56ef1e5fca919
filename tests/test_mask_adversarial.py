"""Masking bypass attempts (docs/masking.md, reference pg-extension.md sections 5 and 7A), one
test each, through real clients. Every test asserts the attempt's outcome (denied, or masked
values) and that no seeded PII value reached the client: the client's whole output (rows,
notices, errors, their detail) is searched for every generated name, email, phone, card,
SSN, IBAN and secret.

Roles (agent.masking.testing): ai_reader is masked in every session; app is shared (the
attested identity decides; unattested is masked); analyst is not governed; app_owner owns the
tables; reporting is a group that may read them (ai_reader was a member until lock-down).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from agent.masking.testing import MaskedCluster, Output
from agent.pgcluster import PG_BIN
from agent.policy import client

pytestmark = pytest.mark.pg
FIRST = 3  # the customer most tests read


@pytest.fixture(scope="module")
def mc() -> Iterator[MaskedCluster]:
    m = MaskedCluster(rows=60).start()
    yield m
    m.destroy()


@pytest.fixture(scope="module")
def db(mc: MaskedCluster) -> str:
    """Shared by the tests that change nothing."""
    return mc.new_db()


@pytest.fixture
def fresh(mc: MaskedCluster) -> str:
    """For the tests that change something."""
    return mc.new_db()


def clean(mc: MaskedCluster, out: Output) -> Output:
    leaked = mc.leaks(out.text)
    assert leaked == [], f"clear PII reached the client: {leaked[:3]}"
    return out


def denied(mc: MaskedCluster, out: Output) -> None:
    clean(mc, out)
    assert not out.ok and out.sqlstate == "42501", out.text[-600:]


def masked(mc: MaskedCluster, out: Output) -> None:
    clean(mc, out)
    assert out.ok and "[redacted]" in out.text, out.text[-600:]


def drift_kinds(mc: MaskedCluster, db: str) -> list[str]:
    return [f"{f['kind']}:{f['object']}:{f['detail']}" for f in client.drift(mc.dsn(db))]


# -- 1. the base table by its qualified name, COPY, search_path ----------------------------------

@pytest.mark.parametrize("user", ["ai_reader", "app"])
def test_schema_qualified_base_table(mc: MaskedCluster, db: str, user: str) -> None:
    denied(mc, mc.psql(db, user, "SELECT * FROM app.customers"))
    denied(mc, mc.psql(db, user, "SELECT email FROM app.customers WHERE id = 3"))
    denied(mc, mc.psql(db, user, "SELECT count(*) FROM app.customers WHERE ssn LIKE '0%'"))
    denied(mc, mc.psql(db, user, "SELECT c FROM app.customers c"))
    denied(mc, mc.psql(db, user, "SELECT * FROM app.orders"))
    allowed = clean(mc, mc.psql(db, user, "SELECT id, status FROM app.customers WHERE id = 3"))
    assert allowed.ok and "active" in allowed.text


@pytest.mark.parametrize("user", ["ai_reader", "app"])
def test_search_path_pointing_at_the_base_schema(mc: MaskedCluster, db: str, user: str) -> None:
    denied(mc, mc.psql(db, user, "SET search_path = app; SELECT * FROM customers"))
    out = mc.psql(db, user, "SET search_path = public; SELECT * FROM app.customers")
    denied(mc, out)


@pytest.mark.parametrize("user", ["ai_reader", "app"])
def test_copy_to(mc: MaskedCluster, db: str, user: str) -> None:
    denied(mc, mc.psql(db, user, "COPY app.customers TO STDOUT"))
    denied(mc, mc.psql(db, user, "COPY app.customers (email) TO STDOUT"))
    view = mc.psql(db, user, "COPY customers TO STDOUT")
    clean(mc, view)
    assert not view.ok and "cannot copy from view" in view.text
    masked(mc, mc.psql(db, user, "COPY (SELECT * FROM customers) TO STDOUT WITH (FORMAT csv)"))
    masked(mc, mc.psql(db, user, "\\copy (SELECT * FROM customers) TO STDOUT"))


# -- 2. roles: SET ROLE, memberships, pg_read_all_data ---------------------------------------------

def test_set_role_to_a_role_that_reads_in_clear(mc: MaskedCluster, db: str) -> None:
    # ai_reader was a member of `reporting` (SELECT on the tables): lock-down revoked that
    assert mc.sql(db, "SELECT pg_has_role('ai_reader', 'reporting', 'MEMBER')") == [(False,)]
    for role in ("reporting", "analyst", "app_owner", "postgres", "app"):
        out = mc.psql(db, "ai_reader", f"SET ROLE {role}; SELECT * FROM app.customers")
        clean(mc, out)
        assert not out.ok and "permission denied to set role" in out.text
    out = mc.psql(db, "ai_reader", "SET SESSION AUTHORIZATION analyst; SELECT 1")
    clean(mc, out)
    assert not out.ok


def test_membership_granted_after_apply_is_reported_and_revoked(mc: MaskedCluster,
                                                               fresh: str) -> None:
    # (roles are cluster-wide: apply's revocations below restore what other tests expect)
    mc.sql(fresh, "GRANT reporting TO ai_reader")
    mc.sql(fresh, "GRANT pg_read_all_data TO app")
    assert any("ai_reader in reporting" in k for k in drift_kinds(mc, fresh))
    assert any("app in pg_read_all_data" in k for k in drift_kinds(mc, fresh))
    leak = mc.psql(fresh, "app", "SELECT email FROM app.customers WHERE id = 3")
    assert leak.ok and mc.leaks(leak.text), "the bypass this test guards against is real"
    client.apply(mc.dsn(fresh), mc.policy, None)
    assert not any("reporting" in k or "read_all_data" in k for k in drift_kinds(mc, fresh))
    denied(mc, mc.psql(fresh, "app", "SELECT email FROM app.customers WHERE id = 3"))
    out = mc.psql(fresh, "ai_reader", "SET ROLE reporting; SELECT email FROM app.customers")
    clean(mc, out)
    assert not out.ok


def test_generic_plan_across_set_role_and_identity_change(mc: MaskedCluster, fresh: str) -> None:
    """A cached generic plan re-runs the per-statement decision: after SET ROLE to a masked
    role, and after the agent re-attests the backend as a masked service."""
    mc.sql(fresh, "GRANT app TO ai_reader")  # a masked role that may also read the gate views
    try:
        _generic_plans(mc, fresh)
    finally:
        mc.sql(fresh, "REVOKE app FROM ai_reader")  # roles are cluster-wide


def _generic_plans(mc: MaskedCluster, fresh: str) -> None:
    email = mc.customers[FIRST - 1]["email"]
    with psycopg.connect(mc.dsn(fresh), autocommit=True) as su:
        mc.attest(fresh, su, {"service": "billing"})
        su.execute("SET plan_cache_mode = force_generic_plan")
        su.execute("PREPARE p(int) AS SELECT email FROM pgwarden_gate_app.customers WHERE id = $1")
        assert su.execute("EXECUTE p(3)").fetchone() == (email,)
        su.execute("SET ROLE ai_reader")
        again = su.execute("EXECUTE p(3)").fetchone()
        su.execute("RESET ROLE")
        assert again is not None and again[0] != email and mc.leaks(str(again)) == []
        assert su.execute("EXECUTE p(3)").fetchone() == (email,)
        assert "Custom" not in json.dumps(su.execute(
            "EXPLAIN (FORMAT JSON) EXECUTE p(3)").fetchone()[0])  # really the generic plan
    with psycopg.connect(mc.dsn(fresh, "app"), autocommit=True) as app:
        mc.attest(fresh, app, {"service": "billing"})
        app.execute("SET plan_cache_mode = force_generic_plan")
        app.execute("PREPARE q(int) AS SELECT email, card_number FROM customers WHERE id = $1")
        assert app.execute("EXECUTE q(3)").fetchone()[0] == email
        mc.attest(fresh, app, {"service": "ai-agent"})
        after = app.execute("EXECUTE q(3)").fetchone()
        assert after == (email[0] + "***@" + email.split("@")[1], "[redacted]")
    # the decision is computed at run time, never folded into the cached plan: no function it
    # calls may be IMMUTABLE (an IMMUTABLE check would be constant-folded: the known trap)
    inner = mc.sql(fresh, "SELECT oid FROM pg_class WHERE relnamespace ="
                          " 'pgwarden_maskd'::regnamespace")
    folded = mc.sql(fresh, "SELECT DISTINCT p.oid::regprocedure::text FROM pg_depend d"
                           " JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_proc p ON p.oid ="
                           " d.refobjid WHERE d.classid = 'pg_rewrite'::regclass"
                           " AND d.refclassid = 'pg_proc'::regclass AND r.ev_class = ANY(%s)"
                           " AND p.provolatile = 'i' AND p.pronargs = 0",
                    [[r[0] for r in inner]])
    assert inner and folded == []


# -- 3. code and views owned by roles that read in clear --------------------------------------------

LEAKY = """
SET check_function_bodies = off;  -- rows_by_path() resolves `customers` when it runs
SET ROLE app_owner;
CREATE FUNCTION app.customer_email(i int) RETURNS text LANGUAGE sql SECURITY DEFINER
  SET search_path = app AS $$ SELECT email FROM app.customers WHERE id = i $$;
CREATE FUNCTION app.customer_rows() RETURNS SETOF app.customers LANGUAGE sql
  AS $$ SELECT * FROM app.customers $$;
CREATE FUNCTION app.rows_by_path() RETURNS TABLE (email text) LANGUAGE sql
  AS $$ SELECT email FROM customers $$;
CREATE VIEW app.contact_list AS SELECT full_name, email, phone FROM app.customers;
CREATE MATERIALIZED VIEW app.card_cache AS SELECT id, card_number FROM app.customers;
GRANT SELECT ON app.contact_list, app.card_cache TO ai_reader, app, analyst;
RESET ROLE;
"""


def test_security_definer_functions_and_views_over_pii(mc: MaskedCluster) -> None:
    db = mc.new_db(apply=False)
    mc.sql(db, LEAKY)
    client.apply(mc.dsn(db), mc.policy, None)
    for user in ("ai_reader", "app"):
        denied(mc, mc.psql(db, user, "SELECT app.customer_email(3)"))
        denied(mc, mc.psql(db, user, "SELECT * FROM app.customer_rows()"))
        denied(mc, mc.psql(db, user, "SELECT * FROM app.contact_list"))
        denied(mc, mc.psql(db, user, "SELECT * FROM app.card_cache"))
        masked_rows = mc.psql(db, user, "SELECT * FROM app.rows_by_path()")  # resolves the view
        clean(mc, masked_rows)
        assert masked_rows.ok and "***@" in masked_rows.text
    # everyone else keeps them (PUBLIC's EXECUTE went to each other login role)
    real = mc.psql(db, "analyst", "SELECT app.customer_email(3)")
    assert real.ok and mc.customers[FIRST - 1]["email"] in real.text
    # re-opened after apply (GRANT, a new SECURITY DEFINER function): closed again in the same
    # transaction, with a NOTICE; nothing left for drift to report
    for sql in ("GRANT EXECUTE ON FUNCTION app.customer_email(int) TO ai_reader",
                "GRANT SELECT ON app.contact_list TO PUBLIC",
                "CREATE FUNCTION app.customer_ssn(i int) RETURNS text LANGUAGE sql SECURITY"
                " DEFINER SET search_path = app AS $$ SELECT ssn FROM app.customers"
                " WHERE id = i $$"):
        out = mc.psql(db, "postgres", sql)
        assert out.ok and "pgwarden: masking lock-down" in out.text, out.text
    denied(mc, mc.psql(db, "ai_reader", "SELECT app.customer_email(3)"))
    denied(mc, mc.psql(db, "ai_reader", "SELECT app.customer_ssn(3)"))
    denied(mc, mc.psql(db, "app", "SELECT * FROM app.contact_list"))
    assert drift_kinds(mc, db) == []


def test_functions_returning_rows_run_as_the_caller(mc: MaskedCluster, db: str) -> None:
    out = mc.psql(db, "app", "CREATE FUNCTION pg_temp.rows() RETURNS SETOF text LANGUAGE sql"
                             " AS 'SELECT email FROM app.customers'; SELECT * FROM pg_temp.rows()")
    denied(mc, out)
    out = mc.psql(db, "app", "CREATE FUNCTION pg_temp.rows() RETURNS SETOF text LANGUAGE sql"
                             " AS 'SELECT email FROM customers'; SELECT * FROM pg_temp.rows()")
    clean(mc, out)
    assert out.ok and "***@" in out.text
    denied(mc, mc.psql(db, "ai_reader", "CREATE FUNCTION pg_temp.f() RETURNS int"
                                        " LANGUAGE sql AS 'SELECT 1'"))
    out = mc.psql(db, "ai_reader", "SELECT * FROM json_populate_recordset(NULL::customers,"
                                   " (SELECT json_agg(c) FROM customers c))")
    masked(mc, out)
    out = mc.psql(db, "ai_reader", "SELECT query_to_xml('SELECT * FROM app.customers', true,"
                                   " false, '')")
    denied(mc, out)
    masked(mc, mc.psql(db, "ai_reader", "SELECT query_to_xml('SELECT * FROM customers', true,"
                                        " false, '')"))


# -- 4. cursors, pg_dump, temp tables ------------------------------------------------------------

@pytest.mark.parametrize("user", ["ai_reader", "app"])
def test_cursors(mc: MaskedCluster, db: str, user: str) -> None:
    masked(mc, mc.psql_script(db, user, "BEGIN; DECLARE c SCROLL CURSOR FOR SELECT * FROM"
                                        " customers; FETCH ALL FROM c; FETCH PRIOR FROM c;"
                                        " COMMIT;"))
    masked(mc, mc.psql_script(db, user, "DECLARE h CURSOR WITH HOLD FOR SELECT * FROM"
                                        " customers; FETCH 10 FROM h; CLOSE h;"))
    out = mc.psql_script(db, user, "BEGIN; DECLARE b CURSOR FOR SELECT * FROM app.customers;"
                                   " FETCH ALL FROM b; COMMIT;")
    denied(mc, out)
    with psycopg.connect(mc.dsn(db, user)) as conn, conn.cursor(name="server_side") as cur:
        cur.execute("SELECT * FROM customers WHERE id > %s", [0])
        text = repr(cur.fetchall())
    assert "[redacted]" in text and mc.leaks(text) == []


@pytest.mark.parametrize("user", ["ai_reader", "app"])
def test_pg_dump(mc: MaskedCluster, db: str, user: str) -> None:
    def dump(*args: str) -> Output:
        p = subprocess.run([str(PG_BIN / "pg_dump"), "-d", mc.dsn(db, user), *args],
                           capture_output=True, text=True, timeout=120)
        return Output(p.returncode == 0, p.stdout + p.stderr)

    for args in ((), ("--schema", "app"), ("--table", "app.customers"), ("--data-only",),
                 ("--schema", "app", "--column-inserts")):
        out = clean(mc, dump(*args))
        assert not out.ok and "permission denied" in out.text, args
    views = clean(mc, dump("--schema", "pgwarden_*"))
    assert views.ok and "CREATE VIEW" in views.text and "COPY" not in views.text


def test_temp_table_shadowing(mc: MaskedCluster, db: str) -> None:
    # the AI agent's role may not create temporary objects at all
    denied(mc, mc.psql(db, "ai_reader", "CREATE TEMP TABLE customers (email text)"))
    # a shared role keeps TEMP (its other programs may need it): shadowing fools only itself
    out = mc.psql_script(db, "app", "CREATE TEMP TABLE customers AS SELECT * FROM customers;"
                                    " SELECT * FROM customers; SELECT * FROM pg_temp.customers;")
    masked(mc, out)
    denied(mc, mc.psql_script(db, "app", "CREATE TEMP VIEW v AS SELECT * FROM app.customers;"
                                         " SELECT * FROM v;"))


# -- 5. writes: RETURNING, error messages ------------------------------------------------------------

@pytest.mark.parametrize("user", ["ai_reader", "app"])
def test_returning_clauses_of_writes(mc: MaskedCluster, fresh: str, user: str) -> None:
    out = mc.psql(fresh, user, "UPDATE customers SET status = 'vip' WHERE id = 3 RETURNING *")
    masked(mc, out)
    assert "vip" in out.text
    out = clean(mc, mc.psql(fresh, user, "DELETE FROM newsletter WHERE topic = 'weekly'"
                                         " RETURNING *"))
    assert out.ok and "***@" in out.text and "DELETE 30" in out.text
    masked(mc, mc.psql(fresh, user, "WITH u AS (UPDATE customers SET status = 'x' WHERE id < 5"
                                    " RETURNING *) SELECT * FROM u"))
    denied(mc, mc.psql(fresh, user, "UPDATE app.customers SET status = 'x' WHERE id = 3"
                                    " RETURNING email"))
    denied(mc, mc.psql(fresh, user, "UPDATE app.customers SET status = email WHERE id = 3"))
    denied(mc, mc.psql(fresh, user, "DELETE FROM app.newsletter WHERE email LIKE 'c%'"))
    out = mc.psql(fresh, user, "INSERT INTO customers (id, full_name, email) VALUES"
                               " (9001, 'x', 'x@example.com') RETURNING *")
    clean(mc, out)
    assert not out.ok and "cannot insert into column" in out.text


@pytest.mark.parametrize("user", ["ai_reader", "app"])
def test_error_messages(mc: MaskedCluster, fresh: str, user: str) -> None:
    row = mc.customers[FIRST - 1]
    for sql in ("SELECT email::int FROM customers WHERE id = 3",
                "SELECT full_name::date FROM customers WHERE id = 3",
                "SELECT card_number::numeric FROM customers ORDER BY id",
                "SELECT 1 / (length(ssn) - length(ssn)) FROM customers WHERE id = 3",
                "SELECT * FROM customers WHERE id = 3 AND email::uuid IS NULL"):
        out = clean(mc, mc.psql(fresh, user, sql))
        assert not out.ok
    # constraint violations: the DETAIL shows only columns the session may read
    out = clean(mc, mc.psql(fresh, user, "UPDATE customers SET status = NULL WHERE id = 3"))
    assert not out.ok and "not-null" in out.text
    out = clean(mc, mc.psql(fresh, user, "UPDATE app.customers SET status = NULL WHERE id = 3"))
    assert not out.ok
    # unique violation on a masked column: the key's value is not quoted back
    text = mc.psycopg(fresh, user, "INSERT INTO app.customers (id, full_name, email) VALUES"
                                   " (%s, %s, %s)", (9002, "Someone Else", row["email"])).text
    assert mc.leaks(text, [row["full_name"]]) == []
    assert row["email"] not in text.replace("(%s, %s, %s)", "")
    out = clean(mc, mc.psql(fresh, user, "INSERT INTO app.orders (id, customer_id, amount)"
                                         " VALUES (9003, 999999, 1)"))
    assert not out.ok


# -- 6. more: oracles, catalogs, pgwarden's own objects ---------------------------------------------

@pytest.mark.parametrize("user", ["ai_reader", "app"])
def test_predicate_oracles_and_plans(mc: MaskedCluster, db: str, user: str) -> None:
    row = mc.customers[FIRST - 1]
    for col in ("email", "ssn", "card_number", "full_name"):
        out = mc.psycopg(db, user, f"SELECT count(*) FROM customers WHERE {col} = %s",
                         (row[col],))
        assert out.ok and out.text == "[(0,)]", (col, out)
    out = mc.psycopg(db, user, "SELECT email, count(*) FROM customers GROUP BY email"
                               " ORDER BY email")
    clean(mc, out)
    masked(mc, mc.psql(db, user, "EXPLAIN (ANALYZE, VERBOSE, COSTS OFF) SELECT * FROM customers"
                                 " WHERE email <> 'x'; SELECT '[redacted]'"))
    clean(mc, mc.psql(db, user, "SELECT * FROM pg_stats WHERE schemaname = 'app'"))
    out = clean(mc, mc.psql(db, user, "SELECT attname, most_common_vals FROM pg_stats"
                                      " WHERE tablename = 'customers' AND attname = 'email'"))
    assert "(0 rows)" in out.text
    masked(mc, mc.psql(db, user, "SELECT row_to_json(c), c::text FROM customers c"
                                 " WHERE id = 3"))


@pytest.mark.parametrize("user", ["ai_reader", "app"])
def test_pgwarden_internals_are_out_of_reach(mc: MaskedCluster, db: str, user: str) -> None:
    for sql in ("SELECT * FROM pgwarden.mask_key", "SELECT * FROM pgwarden.attested",
                "SELECT * FROM pgwarden_maskd.r1",
                "INSERT INTO pgwarden.attested VALUES (pg_backend_pid(), now(), 'billing',"
                " '{}', false)",
                "SELECT pgwarden.attest(pg_backend_pid(), now(), '{\"service\": \"billing\"}')",
                "SELECT pgwarden_dblink.dblink('dbname=postgres', 'SELECT 1')",
                "SELECT * FROM pgwarden.identities()",
                "DROP VIEW pgwarden_mask_app.customers",
                "CREATE OR REPLACE VIEW pgwarden_gate_app.customers AS SELECT 1",
                "ALTER VIEW pgwarden_gate_app.customers OWNER TO app"):
        out = clean(mc, mc.psql(db, user, sql))
        assert not out.ok and out.sqlstate in ("42501", "42P01", "3F000", "42883"), (sql, out)
    inner = mc.sql(db, "SELECT oid::regclass::text FROM pg_class WHERE relnamespace ="
                       " 'pgwarden_maskd'::regnamespace LIMIT 1")[0][0]
    denied(mc, mc.psql(db, user, f"SELECT * FROM {inner}"))


def test_own_search_path_setting_fails_closed_and_is_reported(mc: MaskedCluster,
                                                              fresh: str) -> None:
    out = mc.psql(fresh, "ai_reader", "ALTER ROLE ai_reader IN DATABASE"
                                      f" {fresh} SET search_path = app, public")
    if out.ok:  # a role may change its own defaults: the next session fails closed
        denied(mc, mc.psql(fresh, "ai_reader", "SELECT * FROM customers"))
        assert any(k.startswith("not_enforced:ai_reader") for k in drift_kinds(mc, fresh))
        client.apply(mc.dsn(fresh), mc.policy, None)
    masked(mc, mc.psql(fresh, "ai_reader", "SELECT * FROM customers WHERE id < 5"))


def test_masked_role_owning_a_table_is_refused(mc: MaskedCluster, fresh: str) -> None:
    mc.sql(fresh, "ALTER TABLE app.newsletter OWNER TO ai_reader")
    with pytest.raises(Exception, match="owns app.newsletter"):
        client.apply(mc.dsn(fresh), mc.policy, None)
    assert any("owned by masked role ai_reader" in k for k in drift_kinds(mc, fresh))

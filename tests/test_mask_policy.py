"""Masking as policy-as-code: plan shows the exact changes, apply is atomic and idempotent,
drift reports what re-opens masking; views follow their tables through DDL (add, drop, rename,
retype a column; rename, drop, recreate a table; DDL inside DO blocks); every method (partial,
redact, pseudonym, null, placeholder); per-statement cost of the decision (one InitPlan, one
call); the expressions in views are the documented SQL functions; the file's masking section
is validated with line and column.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.db import install as installer
from agent.masking.testing import MASKING_HEAD, MaskedCluster
from agent.pii import DEFAULT_METHOD
from agent.policy import client
from agent.policy.schema import PolicyFileError, load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pg_extension" / "python"))
from pgwarden_ext import mask  # noqa: E402

pytestmark = pytest.mark.pg


@pytest.fixture(scope="module")
def mc() -> Iterator[MaskedCluster]:
    m = MaskedCluster(rows=40, settings={"track_functions": "'all'"}).start()
    yield m
    m.destroy()


@pytest.fixture
def db(mc: MaskedCluster) -> str:
    return mc.new_db()


def plan(mc: MaskedCluster, db: str, text: str | None = None) -> list[str]:
    pol = load(text) if text else mc.policy
    return [f"{c['change']} {c['kind']} {c['object']}: {c['detail']}"
            for c in client.plan(mc.dsn(db), pol)]


def apply(mc: MaskedCluster, db: str, text: str) -> None:
    client.apply(mc.dsn(db), load(text), None)


def one(mc: MaskedCluster, db: str, user: str, sql: str) -> tuple:  # type: ignore[type-arg]
    with psycopg.connect(mc.dsn(db, user), autocommit=True) as conn:
        return conn.execute(sql).fetchone()  # type: ignore[return-value]


# -- plan / apply / drift ---------------------------------------------------------------------------

def test_plan_apply_idempotent_and_drift_clean(mc: MaskedCluster) -> None:
    db = mc.new_db(apply=False)
    lines = plan(mc, db)
    # a copy of the template: masking catalog and views came along, the per-database role
    # settings and the database ACL did not
    assert any(line.startswith("~ search_path ai_reader") for line in lines), lines
    assert any("database " in line and "TEMPORARY" in line for line in lines), lines
    client.apply(mc.dsn(db), mc.policy, None)
    assert plan(mc, db) == []
    assert client.drift(mc.dsn(db)) == []
    fresh = mc.new_db(apply=False)
    mc.sql(fresh, "SELECT pgwarden.unmask_all()")
    full = plan(mc, fresh)
    for expected in ("+ mask view pgwarden_mask_app.customers", "+ mask view pgwarden_gate_app"
                     ".customers", "+ mask schema pgwarden_maskd", "+ mask grant pgwarden_mask_app"
                     ".customers: SELECT", "~ search_path app:"):
        assert any(line.startswith(expected) for line in full), (expected, full)


def test_apply_is_atomic(mc: MaskedCluster, db: str) -> None:
    # an object outside pgwarden depends on a masking view: recreating it must fail, and
    # nothing of the apply may stay
    mc.sql(db, "CREATE VIEW public.mine AS SELECT email FROM pgwarden_gate_app.customers")
    before = mc.sql(db, "SELECT relid, attnum, method FROM pgwarden.mask_column ORDER BY 1, 2")
    changed = mc.policy_text.replace("app.customers.email: {class: email, method: partial",
                                     "app.customers.email: {class: email, method: redact")
    assert changed != mc.policy_text
    with pytest.raises(Exception, match="depend"):
        apply(mc, db, changed)
    assert mc.sql(db, "SELECT relid, attnum, method FROM pgwarden.mask_column"
                      " ORDER BY 1, 2") == before
    assert one(mc, db, "ai_reader", "SELECT email FROM customers WHERE id = 1")[0].count("*") == 3


def test_reopening_ddl_is_undone_at_once_the_rest_is_reported(mc: MaskedCluster,
                                                             db: str) -> None:
    # GRANT and REVOKE fire event triggers: lock-down is re-applied in the same transaction
    for sql in ("GRANT SELECT ON app.customers TO ai_reader",
                "GRANT SELECT (ssn) ON app.customers TO app",
                "GRANT CREATE ON SCHEMA public TO ai_reader",
                "CREATE OR REPLACE VIEW pgwarden_mask_app.newsletter AS"
                " SELECT email, topic FROM app.newsletter",
                "ALTER VIEW pgwarden_gate_app.orders OWNER TO app_owner"):
        out = mc.psql(db, "postgres", sql)
        assert out.ok, out.text
        if sql.startswith("GRANT"):
            assert "pgwarden: masking lock-down" in out.text, out.text
    assert mc.sql(db, "SELECT has_column_privilege('ai_reader', 'app.customers', 'email',"
                      " 'SELECT'), has_column_privilege('app', 'app.customers', 'ssn', 'SELECT'),"
                      " has_schema_privilege('ai_reader', 'public', 'CREATE')") == [
        (False, False, False)]
    assert "***" in one(mc, db, "ai_reader", "SELECT email FROM newsletter LIMIT 1")[0]
    # roles, role settings and database privileges fire no event trigger: drift, then apply
    mc.sql(db, "GRANT TEMPORARY ON DATABASE " + db + " TO ai_reader")
    mc.sql(db, "ALTER ROLE app IN DATABASE " + db + " SET search_path = app, public")
    mc.sql(db, "GRANT pg_read_all_data TO ai_reader")
    try:
        found = {(f["kind"], f["object"]) for f in client.drift(mc.dsn(db))}
        for expected in (("not_enforced", f"database {db} TEMPORARY"), ("not_enforced", "app"),
                         ("not_enforced", "ai_reader in pg_read_all_data"),
                         ("read_all_data", "ai_reader")):
            assert expected in found, (expected, found)
    finally:
        client.apply(mc.dsn(db), mc.policy, None)
    assert client.drift(mc.dsn(db)) == []


def test_policy_changes_methods_columns_and_roles(mc: MaskedCluster, db: str) -> None:
    row = mc.customers[0]
    text = mc.policy_text.replace(
        "app.customers.phone: {class: phone, method: partial",
        "app.customers.phone: {class: phone, method: 'null'").replace(
        "app.customers.ssn: {class: national_id, method: redact",
        "app.customers.ssn: {method: placeholder, value: 'XXX-XX-XXXX'").replace(
        "app.customers.birth_date: {class: date_of_birth, method: redact",
        "app.customers.birth_date: {class: date_of_birth, method: partial")
    text = text.replace("app.customers.full_name: {class: person_name", "app.customers.full_name:"
                        " off  # reviewed: display names are public here\n    x.y.z: {class:"
                        " person_name")
    lines = plan(mc, db, text)
    assert "~ mask column app.customers.phone: partial (phone) -> null (phone)" in lines
    assert "- mask column app.customers.full_name: partial (person_name)" in lines
    assert "! mask column x.y.z: not in this database: nothing to mask" in lines
    apply(mc, db, text)
    got = one(mc, db, "ai_reader", "SELECT full_name, phone, ssn, birth_date FROM customers"
                                   " WHERE id = 1")
    assert got == (row["full_name"], None, "XXX-XX-XXXX", row["birth_date"].replace(month=1,
                                                                                     day=1))
    # a role no longer governed gets its search_path back (and no access to the views)
    apply(mc, db, text.replace("roles: [ai_reader]", "roles: []"))
    assert mc.sql(db, "SELECT count(*) FROM pgwarden.mask_role r JOIN pg_roles o"
                      " ON o.oid = r.roleid WHERE o.rolname = 'ai_reader'") == [(0,)]
    out = mc.psql(db, "ai_reader", "SHOW search_path")
    assert "pgwarden" not in out.text and "app, public" in out.text


def test_unattested_unmasked_when_the_policy_says_so(mc: MaskedCluster, db: str) -> None:
    email = mc.customers[0]["email"]
    assert one(mc, db, "app", "SELECT email FROM customers WHERE id = 1")[0] != email
    apply(mc, db, mc.policy_text + "  unmask:\n    identities: [unattested]\n")
    assert one(mc, db, "app", "SELECT email FROM customers WHERE id = 1")[0] == email
    assert one(mc, db, "ai_reader", "SELECT email FROM customers WHERE id = 1")[0] != email


# -- DDL: the views follow their tables -------------------------------------------------------------

def test_ddl_churn_keeps_masking(mc: MaskedCluster, db: str) -> None:
    row = mc.customers[0]

    def masked_ok(sql: str, user: str = "ai_reader") -> str:
        out = mc.psql(db, user, sql)
        assert out.ok and mc.leaks(out.text) == [], out.text[-400:]
        return out.text

    def ddl(sql: str) -> None:
        out = mc.psql(db, "app_owner", sql)
        assert out.ok, out.text

    ddl("ALTER TABLE app.customers ADD COLUMN nickname text DEFAULT 'nick'")
    assert "nick" in masked_ok("SELECT nickname, email FROM customers WHERE id = 1")
    ddl("ALTER TABLE app.customers DROP COLUMN iban")  # no CASCADE needed
    masked_ok("SELECT * FROM customers WHERE id = 1")
    ddl("ALTER TABLE app.customers RENAME COLUMN email TO mail")  # stays masked (by attnum)
    assert "***@" in masked_ok("SELECT mail FROM customers WHERE id = 1")
    assert "***@" in masked_ok("SELECT mail FROM customers WHERE id = 1", "app")
    ddl("ALTER TABLE app.customers ALTER COLUMN phone TYPE varchar(40)")
    assert "******" in masked_ok("SELECT phone FROM customers WHERE id = 1")
    ddl("DO $$ BEGIN EXECUTE 'ALTER TABLE app.customers ALTER COLUMN ssn TYPE varchar(20)'; END $$")
    assert "[redacted]" in masked_ok("SELECT ssn FROM customers WHERE id = 1")
    ddl("BEGIN; ALTER TABLE app.newsletter RENAME TO subscribers; COMMIT;")
    assert "***@" in masked_ok("SELECT email FROM subscribers LIMIT 1")
    ddl("DROP TABLE app.subscribers")
    ddl("CREATE TABLE app.newsletter (email text, topic text);"
        f" INSERT INTO app.newsletter VALUES ('{row['email']}', 'x')")
    mc.sql(db, "GRANT SELECT, INSERT ON app.newsletter TO ai_reader, app")  # narrowed at once
    assert "***@" in masked_ok("SELECT email FROM newsletter")
    out = mc.psql(db, "ai_reader", "SELECT email FROM app.newsletter")
    assert not out.ok and mc.leaks(out.text) == []
    failed = mc.psql(db, "app_owner", "ALTER TABLE app.customers ALTER COLUMN card_number TYPE"
                                      " int USING 1/0")
    assert not failed.ok  # rolled back with the views it dropped
    masked_ok("SELECT card_number FROM customers WHERE id = 1")
    lines = plan(mc, db)
    assert "- mask column app.customers.mail: partial (email)" in lines
    assert "! mask column app.customers.email: not in this database: nothing to mask" in lines


def test_views_belong_to_pgwarden(mc: MaskedCluster, db: str) -> None:
    out = mc.psql(db, "app_owner", "DROP VIEW pgwarden_mask_app.customers")
    assert not out.ok
    mc.sql(db, "GRANT pgwarden_mask_owner TO app_owner")
    try:
        for sql in ("DROP VIEW pgwarden_mask_app.customers",
                    "CREATE OR REPLACE VIEW pgwarden_mask_app.newsletter AS"
                    " SELECT email, topic FROM app.newsletter"):
            out = mc.psql(db, "app_owner", sql)
            assert not out.ok and "guard_integrity" in out.text, out.text
    finally:
        mc.sql(db, "REVOKE pgwarden_mask_owner FROM app_owner")


# -- methods ----------------------------------------------------------------------------------------

PSEUDONYMS = """\
version: 1
masking:
  columns:
    app.customers.email: {class: email, method: pseudonym}
    app.newsletter.email: {class: email, method: pseudonym}
    app.orders.customer_id: pseudonym
    app.customers.full_name: {class: person_name}
""" + MASKING_HEAD


def test_pseudonyms_are_keyed_consistent_and_join(mc: MaskedCluster, db: str) -> None:
    apply(mc, db, PSEUDONYMS)
    sql = ("SELECT count(*), count(DISTINCT c.email), min(c.email) FROM customers c"
           " JOIN newsletter n ON n.email = c.email")
    real, masked = one(mc, db, "analyst", sql), one(mc, db, "ai_reader", sql)
    assert masked[:2] == real[:2] and real[0] == len(mc.customers) // 2
    assert re.fullmatch(r"p_[0-9a-f]{16}", masked[2]) and mc.leaks(masked[2]) == []
    again = one(mc, db, "app", "SELECT email FROM customers WHERE id = 1")
    assert again == one(mc, db, "ai_reader", "SELECT email FROM customers WHERE id = 1")
    ids = one(mc, db, "ai_reader", "SELECT min(customer_id), count(DISTINCT customer_id)"
                                   " FROM orders")
    assert ids[1] == len(mc.customers) and ids[0] > 40  # an integer pseudonym, not the id
    # the key is the extension's secret: an unkeyed (or guessed-key) hash does not match
    email = mc.customers[0]["email"]
    guess = one(mc, db, "ai_reader", "SELECT pgwarden.mask_pseudonym(%s, '\\x00', '\\x00')"
                .replace("%s", "'" + email + "'"))[0]
    assert guess != one(mc, db, "ai_reader", "SELECT email FROM customers WHERE id = 1")[0]
    assert not mc.psql(db, "ai_reader", "SELECT * FROM pgwarden.mask_key").ok
    assert mc.sql(db, "SELECT length(ipad), length(opad) FROM pgwarden.mask_key") == [(64, 64)]


def test_unsupported_method_for_a_type_is_a_clear_error(mc: MaskedCluster, db: str) -> None:
    text = PSEUDONYMS.replace("app.orders.customer_id: pseudonym",
                              "app.orders.shipped: pseudonym")
    with pytest.raises(Exception, match="pseudonym masks text, integer and uuid"):
        client.plan(mc.dsn(db), load(text))


# -- cost and hygiene -------------------------------------------------------------------------------

def test_decision_runs_once_per_statement_and_expressions_are_expanded(mc: MaskedCluster,
                                                                        db: str) -> None:
    with psycopg.connect(mc.dsn(db, "app"), autocommit=True) as conn:
        analyzed = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) SELECT * FROM customers"))
    # one decision per statement: one outermost InitPlan, run once (loops=1) for all the rows
    # (the lookups nested in it run lazily: never, for an unattested session)
    lines = analyzed.splitlines()
    inits = [i for i, line in enumerate(lines) if "InitPlan" in line]
    depth = min(len(lines[i]) - len(lines[i].lstrip()) for i in inits)
    outer = [i for i in inits if len(lines[i]) - len(lines[i].lstrip()) == depth]
    assert len(outer) == 1, analyzed
    assert "loops=1" in lines[outer[0] + 1] and f"rows={len(mc.customers)}" in analyzed
    assert "mask_email" not in analyzed and "mask_name" not in analyzed  # expanded, no calls
    with psycopg.connect(mc.dsn(db, "ai_reader"), autocommit=True) as conn:
        mask_plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM customers"))
    assert "attested" not in mask_plan and "InitPlan" not in mask_plan, mask_plan


def test_sql_functions_are_inlined_and_equal_the_view_expressions(mc: MaskedCluster,
                                                                 db: str) -> None:
    with psycopg.connect(mc.dsn(db), autocommit=True) as conn:
        for fn in ("mask_email(email)", "mask_name(full_name)",
                   "mask_tail(phone, 2, '******')", "mask_initial(full_name)"):
            text = "\n".join(r[0] for r in conn.execute(
                f"EXPLAIN (VERBOSE, COSTS OFF) SELECT pgwarden.{fn} FROM app.customers"))
            assert "mask_" not in text, text  # inlined: the planner sees the expression
            prov = conn.execute(
                "SELECT p.prosecdef, p.proconfig IS NULL, p.provolatile, l.lanname"
                " FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
                " WHERE p.oid = %s::regprocedure",
                [f"pgwarden.{fn.split('(')[0]}({_args(fn)})"]).fetchone()
            assert prov == (False, True, "i", "sql")
        got = conn.execute(
            "SELECT bool_and(pgwarden.mask_email(c.email) = m.email"
            " AND pgwarden.mask_name(c.full_name) = m.full_name"
            " AND pgwarden.mask_tail(c.phone, 2, '******') = m.phone)"
            " FROM app.customers c JOIN pgwarden_mask_app.customers m USING (id)").fetchone()
    assert got == (True,)


def _args(call: str) -> str:
    n = call.count(",") + 1
    return {1: "text", 3: "text, integer, text"}[n]


# -- the policy file --------------------------------------------------------------------------------

def test_masking_section_errors_have_line_and_column() -> None:
    text = """\
version: 1
masking:
  mask:
    roles: [ai]
    identities: [ai-agent]
  columns:
    app.users.email: {class: e-mail}
    app.users.phone: {method: null}
    app.users.ssn: {class: national_id, method: placeholder}
    users.name: partial
    app.users.card: {method: hash}
    app.users.key: {class: secret, confidence: 2}
"""
    with pytest.raises(PolicyFileError) as e:
        load(text)
    got = {(p.line, p.path.split(".")[-1] if "." in p.path else p.path) for p in e.value.problems}
    assert (3, "masking") in got  # identities without shared_roles
    lines = {p.line for p in e.value.problems}
    assert {7, 8, 9, 10, 11, 12} <= lines, e.value


def test_suggestions_fragment_accepted_verbatim(mc: MaskedCluster) -> None:
    pol = load("version: 1\n" + mc.suggestions)
    cols = pol.doc["masking"]["columns"]
    assert all(c["method"] == DEFAULT_METHOD[c["class"]] for c in cols)
    assert pol.doc["protect"] == [] and pol.doc["masking"]["mask"]["roles"] == []


def test_classes_match_discovery() -> None:
    assert mask.DEFAULT_METHOD == DEFAULT_METHOD


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab*?-.:/ ", max_size=8), st.text(alphabet="ab-.:/ ", max_size=8))
def test_identity_globs_match_as_fnmatch(glob: str, name: str) -> None:
    regex = mask.glob_regex(glob)
    assert bool(re.match(regex, name, re.S)) == fnmatchcase(name, glob), (glob, regex)
    assert re.match(mask.glob_regex("exe:/usr/bin/p[y]"), "exe:/usr/bin/p[y]")  # [ is literal


def test_identity_rule_in_sql_equals_python(mc: MaskedCluster, db: str) -> None:
    apply(mc, db, mc.policy_text.replace("identities: [ai-agent]",
                                         "identities: ['ai-*', 'exe:/usr/bin/p?thon3']")
          + "  unmask:\n    identities: [ai-trusted, 'unit:billing*']\n")
    cases = [None, "ai-agent", "ai-trusted", "billing", "exe:/usr/bin/python3",
             "unit:billing.service", "ai-", "xai-agent"]
    for ident in cases:
        sql = mc.sql(db, "SELECT pgwarden._identity_masks(%s)", [ident])[0][0]
        assert sql == mask.identity_masked(["ai-*", "exe:/usr/bin/p?thon3"],
                                           ["ai-trusted", "unit:billing*"], ident), ident


def test_uninstall_removes_masking(mc: MaskedCluster, db: str) -> None:
    installer.uninstall(mc.dsn(db))
    assert mc.sql(db, "SELECT count(*) FROM pg_namespace"
                      " WHERE nspname ~ '^pgwarden_(mask|gate)'") == [(0,)]
    out = mc.psql(db, "ai_reader", "SHOW search_path")
    assert "pgwarden" not in out.text
    denied = mc.psql(db, "ai_reader", "SELECT email FROM app.customers")
    assert not denied.ok and mc.leaks(denied.text) == []  # revocations are not undone

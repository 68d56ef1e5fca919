"""agent.redact: pg_stat_statements-style normalization, fingerprints, and fail-closed behaviour
on text that does not parse or does not even scan (the literal must never come out)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.redact import UNPARSEABLE, Redactor, scrub


@pytest.fixture
def r() -> Redactor:
    return Redactor()


@pytest.mark.parametrize(("sql", "normalized"), [
    ("select * from t where name = 'alice'", "select * from t where name = $1"),
    ("select 1, 2.5, 1e10, 0x1F", "select $1, $2, $3, $4"),
    ("select * from t where a = -42 and b > -0.5", "select * from t where a = $1 and b > $2"),
    ("select * from t where id in (1, 2, 3)", "select * from t where id in ($1, $2, $3)"),
    ("select $tag$it's a secret$tag$, $$another$$", "select $1, $2"),
    ("select E'it\\'s', e'\\x41', U&'d\\0061t'", "select $1, $2, $3"),
    ("select B'1010', X'1F'", "select $1, $2"),
    ("select 1 /* user=bob */ + 2 -- ssn 123-45-6789", "select $1 + $2"),
    ("/* leading */ select 'x'", "select $1"),
    ("SELECT *\n  FROM t\n WHERE a = 'x'", "SELECT *\n  FROM t\n WHERE a = $1"),
    ("select $1, $2 from t where c = 'x'", "select $1, $2 from t where c = $3"),
    ("insert into t values (1, 'a'), (2, 'b') returning id",
     "insert into t values ($1, $2), ($3, $4) returning id"),
    ("select interval '1 day', date '2026-01-01', 'x'::text",
     "select interval $1, date $2, $3::text"),
    ("select * from t limit 10 offset 5", "select * from t limit $2 offset $1"),
    ("update accounts set balance = balance + 100 where id = 7",
     "update accounts set balance = balance + $1 where id = $2"),
])
def test_normalize_examples(r: Redactor, sql: str, normalized: str) -> None:
    assert r.normalize(sql) == normalized


@pytest.mark.parametrize("sql", [
    "ALTER ROLE bob PASSWORD 'hunter2-secret'",
    "CREATE USER bob WITH PASSWORD 'hunter2-secret'",
    "COPY t FROM '/home/secret/data.csv'",
    "COMMENT ON TABLE t IS 'contains secret things'",
    "CREATE VIEW v AS SELECT 'secret' AS x",
    "CREATE TABLE t (a text DEFAULT 'secret')",
    "ALTER SYSTEM SET work_mem = 'secret'",
    "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'secret.example')",
    "CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password 'secret')",
    "DO $$ begin perform 'secret'; end $$",
    "SET application_name = 'secret'",
    "PREPARE p (int) AS select $1 + 123456789",
    "select 1; select 'secret'",
])
def test_constants_in_utility_statements_are_redacted(r: Redactor, sql: str) -> None:
    normalized, fp = r.redact(sql)
    assert "secret" not in normalized and "hunter2" not in normalized
    assert "123456789" not in normalized
    assert re.fullmatch(r"[0-9a-f]{16}", fp)


def test_fingerprint_equal_across_constants_different_across_structure(r: Redactor) -> None:
    same = ["select * from t where a = 1", "select * from t where a = 99",
            "SELECT * FROM t WHERE a = 'x'", "select * from t where a = $1",
            "select * from t where a in (1, 2, 3)"]
    assert len({r.fingerprint(s) for s in same}) == 1
    different = ["select * from t where a = 1", "select * from t where b = 1",
                 "select * from u where a = 1", "select a from t where a = 1",
                 "delete from t where a = 1"]
    assert len({r.fingerprint(s) for s in different}) == len(different)
    assert all(re.fullmatch(r"[0-9a-f]{16}", r.fingerprint(s)) for s in same + different)


def test_fingerprint_never_depends_on_a_secret(r: Redactor) -> None:
    # libpg_query fingerprints these constants: hashing a password would let it be guessed.
    assert r.fingerprint("ALTER ROLE bob PASSWORD 'a'") == \
        r.fingerprint("ALTER ROLE bob PASSWORD 'bcdefgh'")
    assert r.fingerprint("COPY t FROM '/a'") == r.fingerprint("COPY t FROM '/b/c'")
    assert r.fingerprint("select 'a") == r.fingerprint("select 'zzzz")  # unterminated


@pytest.mark.parametrize("sql", [
    "select * from t where pw = 'secret",  # unterminated quoted string
    "select $$secret",  # unterminated dollar quote
    "select 1 /* secret",  # unterminated comment
    'select "secret',  # unterminated quoted identifier
    "select E'secret",
    "selec 'secret' frm t",  # does not parse, scans
    "select 'secret' +",  # does not parse
    "select 123secret",  # trailing junk after a number: does not scan
    "\x00secret",
])
def test_unparseable_input_never_leaks_the_literal(r: Redactor, sql: str) -> None:
    normalized, fp = r.redact(sql)
    assert "secret" not in normalized and "secret" not in fp


def test_unscannable_keeps_the_redacted_prefix(r: Redactor) -> None:
    assert r.normalize("select a, 'x' from t where pw = 'secret") == \
        "select a, $1 from t where pw = " + UNPARSEABLE.format(7)
    assert r.normalize("select 'é', 'secrét") == "select $1, " + UNPARSEABLE.format(8)
    assert r.normalize("'secret") == UNPARSEABLE.format(7)
    assert scrub("") == ""


def test_split(r: Redactor) -> None:
    assert r.split("select 1; select 'a;b'; ") == ["select 1", "select 'a;b'"]
    assert r.split("select 1; selec 2") == ["select 1", "selec 2"]  # scanner fallback
    assert r.split("select 'unterminated; x") == ["select 'unterminated; x"]
    assert r.split("  ") == []


def test_caches_are_bounded_and_per_instance() -> None:
    a = Redactor(cache_size=10)
    for i in range(100):
        a.redact(f"select {i} from t{i}")
    assert len(a._redacted) == 10 and len(a._fingerprints) == 10
    b = Redactor(cache_size=10)
    assert len(b._redacted) == 0
    assert a.redact("select 1 from t1") == b.redact("select 1 from t1")
    off = Redactor(cache_size=0)
    off.redact("select 1")
    assert len(off._redacted) == 0


SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@ ",
                 min_size=4, max_size=20).map(lambda s: "Zq9" + s)
TEMPLATES = [
    "select * from t where a = '{s}'",
    "insert into t (a, b) values (1, '{s}') on conflict do nothing",
    "update t set a = E'{s}' where id = 3",
    "select $x${s}$x$",
    "select * from t where a = '{s}",
    "select * from t where a = $${s}",
    "select 1 /* {s} */",
    "select 1 -- {s}",
    "select 1 /* {s}",
    "COPY t FROM '/{s}'",
    "ALTER ROLE u PASSWORD '{s}'",
    "select '{s}'::text, '{s}'",
    "selec '{s}' from",
    "select U&'{s}'",
    "select 1; select '{s}'; select 2",
    "with x as (select '{s}' as v) select * from x",
    "select jsonb_build_object('k', '{s}')",
]


@settings(deadline=None, max_examples=300)
@given(SECRET, st.sampled_from(TEMPLATES))
def test_no_literal_ever_leaks(secret: str, template: str) -> None:
    sql = template.format(s=secret.replace("'", ""))
    normalized, fp = Redactor().redact(sql)
    assert secret.strip() not in normalized
    assert "Zq9" not in normalized and "Zq9" not in fp


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text: str) -> None:
    normalized, fp = Redactor().redact(text)
    assert isinstance(normalized, str) and re.fullmatch(r"[0-9a-f]{16}", fp)


# -- the re-scan shortcut: skipping it never changes the result ------------------------------

SHORTCUT_CORPUS = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    "UPDATE t1 SET c2 = c2 + 1 WHERE id IN (1, 2, 3) RETURNING x_9",
    'SELECT "col 1", "Jane Doe" FROM "users" u WHERE u."id" = 5',
    "INSERT INTO x VALUES ($1, $2), ($3, 4.5e10)",
    "SELECT * FROM t -- trailing comment 42\nWHERE a = b",
    "SELECT /* hidden 'x' */ 1",
    "COPY t FROM '/tmp/secret.csv'",
    "COMMENT ON TABLE t IS 'top secret'",
    "ALTER ROLE bob PASSWORD 'hunter2'",
    "SELECT $tag$body 77$tag$",
    "SELECT x::numeric(10,2), interval '1 day', B'101', X'FF', E'a\\nb', U&'d\\0061t'",
    "CREATE VIEW v AS SELECT 'literal' AS c",
    "SET search_path = app, public",
    "SELECT t.col1 FROM s1.t2 AS t WHERE t.col1 > t.col2 ORDER BY 1 LIMIT 10 OFFSET 20",
    "DO $$BEGIN RAISE NOTICE 'x'; END$$",
    "PREPARE p1 AS SELECT $1::int + 7",
    "SELECT count(*) FILTER (WHERE a) FROM t GROUP BY ROLLUP (a, b)",
    "SELECT café1, naïve_2 FROM été3",
    'SELECT "Café 9" FROM t',
]


@pytest.mark.parametrize("text,expected", [
    ("SELECT a FROM t WHERE b = $1", False), ("SELECT t1.c2 FROM s3.t4", False),
    ("SELECT 1", True), ("x = -2", True), ("LIMIT 10", True), ("f(a,3)", True),
    ("SELECT 'x'", True), ("a -- c", True), ("a /* c */", True), ("SELECT $$x$$", True),
    ("SELECT $a$x$a$", True), ("x $", True), ("é9", False), ('"c 1"', True), ("9", True),
])
def test_may_hold_constant(text: str, expected: bool) -> None:
    from agent.redact import may_hold_constant

    assert may_hold_constant(text) is expected


@pytest.mark.parametrize("sql", SHORTCUT_CORPUS)
def test_skipped_rescan_would_change_nothing(sql: str) -> None:
    from pglast import parser as pg

    from agent.redact import may_hold_constant, scrub

    try:
        text = pg.normalize(sql)
    except Exception:
        return  # unparseable text always takes the full re-scan
    if not may_hold_constant(text):
        assert scrub(text) == text
    assert Redactor().normalize(sql) == scrub(text)


_WORDS = st.sampled_from(["SELECT", "FROM", "WHERE", "AND", "t", "t1", "col_2", "x", "$1", "$12",
                          "=", "<", "+", "(", ")", ",", ".", "*", "AS", "c3d", "IN", "NOT",
                          "NULL", "::", "int", "_u9", "é2", '"q 7"', "5", "1.5", "$", "€"])


@given(st.lists(_WORDS, min_size=1, max_size=25), st.sampled_from([" ", "\n", "\t", "  "]))
@settings(max_examples=300, deadline=None)
def test_shortcut_equals_full_rescan_on_generated_text(words: list[str], sep: str) -> None:
    from pglast import parser as pg

    from agent.redact import may_hold_constant, scrub

    sql = sep.join(words)
    try:
        text = pg.normalize(sql)
    except Exception:
        return
    if not may_hold_constant(text):
        assert scrub(text) == text


# -- the numeric-shape cache: same answer as a fresh redaction --------------------------------

@pytest.mark.parametrize("sql,shape", [
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 42;", True),
    ("SELECT * FROM t WHERE a IN (1, 2.5, -3) LIMIT 10", True),
    ("SELECT * FROM t1 WHERE a = 5", False), ("SELECT 1e5", False), ("SELECT 'x', 5", False),
    ("SELECT $1 + 5", False), ("SELECT 5 -- c", False), ("SELECT a FROM t", False),
    ("SELECT * FROM tablé1 WHERE a = 5", False), ("SELECT * FROM таблица2", False),
    ("SELECT 'é', 5", False), ("SELECT \udc80, 5", False),
])
def test_numeric_shape_applies_only_where_safe(sql: str, shape: bool) -> None:
    from agent.redact import numeric_shape

    assert (numeric_shape(sql) is not None) is shape


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=3, max_size=3),
       st.lists(st.integers(min_value=0, max_value=10**12), min_size=3, max_size=3),
       st.sampled_from([
           "SELECT abalance FROM pgbench_accounts WHERE aid = {}; SELECT {} + {}",
           "UPDATE acc SET bal = bal + {} WHERE id = {} AND x < -{}",
           "SELECT a, b FROM tab WHERE c BETWEEN {} AND {}.{} ORDER BY 1",
           "INSERT INTO h (a, b, c) VALUES ({}, {}, {})",
           "SELECT col FROM t WHERE v IN ({},{},{}) LIMIT 5 OFFSET 3",
           "SELECT * FROM tablé{} WHERE données{} = {}",
       ]))
@settings(max_examples=200, deadline=None)
def test_numeric_shape_cache_equals_fresh_redaction(first: list[int], second: list[int],
                                                     template: str) -> None:
    cached = Redactor()
    cached.redact(template.format(*first))
    sql = template.format(*second)
    assert cached.redact(sql) == Redactor().redact(sql)

"""Statement classification (pgwarden_ext.classify) and the SQL lexer, without a server.

The same modules run inside PostgreSQL (PL/Python); here they are imported from the source tree
with the virtualenv's sqlglot, which is the version pinned for the server (asserted below).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pg_extension" / "python"))

from pgwarden_ext import classify, lexer  # noqa: E402
from pgwarden_ext.classify import OPAQUE, RESTRICTED, UNRESTRICTED  # noqa: E402

CASES = [
    # (statement, verdict for a DELETE/UPDATE firing on public.t)
    ("DELETE FROM t WHERE id = 5", RESTRICTED),
    ("DELETE FROM t", UNRESTRICTED),
    ("delete   from\n t", UNRESTRICTED),
    ("DELETE FROM t WHERE true", UNRESTRICTED),
    ("DELETE FROM t WHERE 1=1", UNRESTRICTED),
    ("DELETE FROM t WHERE 'a' = 'a'", UNRESTRICTED),
    ("DELETE FROM t WHERE id = id", UNRESTRICTED),
    ("DELETE FROM t WHERE t.id >= t.id", UNRESTRICTED),
    ("DELETE FROM t WHERE id = 5 OR 1 = 1", UNRESTRICTED),
    ("DELETE FROM t WHERE id = 5 OR true", UNRESTRICTED),
    ("DELETE FROM t WHERE NOT false", UNRESTRICTED),
    ("DELETE FROM t WHERE CASE WHEN true THEN true ELSE id = 1 END", UNRESTRICTED),
    ("DELETE FROM t WHERE random() < 0.5", UNRESTRICTED),
    ("DELETE FROM t WHERE id = 5 AND true", RESTRICTED),
    ("DELETE FROM t WHERE id = 5 OR id IS NULL", RESTRICTED),
    ("DELETE FROM t WHERE id = $1", RESTRICTED),
    ("DELETE FROM t WHERE id IN (SELECT id FROM u WHERE u.flag)", RESTRICTED),
    ("/* WHERE id = 1 */ DELETE FROM t -- WHERE id = 1", UNRESTRICTED),
    ("DELETE FROM t /* nested /* WHERE */ comment */", UNRESTRICTED),
    ("DELETE FROM t WHERE note = 'no WHERE here'", RESTRICTED),
    ("DELETE FROM t USING u WHERE u.x = 1", UNRESTRICTED),
    ("DELETE FROM t USING u WHERE t.id = u.id", RESTRICTED),
    ("DELETE FROM ONLY public.t AS x WHERE x.id = 1", RESTRICTED),
    ("DELETE FROM public.t AS x WHERE t.id = 1 AND x.id = x.id", UNRESTRICTED),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d", UNRESTRICTED),
    ("WITH d AS (DELETE FROM t WHERE id < 3 RETURNING *) SELECT * FROM d", RESTRICTED),
    ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", UNRESTRICTED),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", RESTRICTED),
    ("MERGE INTO t USING s ON s.k = 1 WHEN MATCHED AND t.k > 1 THEN DELETE", RESTRICTED),
    ("DELETE FROM t WHERE id = 1; DELETE FROM t", UNRESTRICTED),
    ("SELECT 1; DELETE FROM t WHERE id = 2", RESTRICTED),
    ("DO $$ BEGIN DELETE FROM t WHERE id = 1; END $$", OPAQUE),
    ("CALL purge_t()", OPAQUE),
    ("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1", OPAQUE),
    ("DELETE FROM t WHERE CURRENT OF c", OPAQUE),  # sqlglot cannot parse it
    ("SELECT purge_t()", OPAQUE),  # no visible DELETE of t
    ("DELETE FROM other.t WHERE id = 1", OPAQUE),  # another schema's t
    ("DELETE FROM u WHERE id = 1", OPAQUE),
    ("this is not SQL", OPAQUE),
]


def test_server_sqlglot_pin_matches_virtualenv() -> None:
    import sqlglot

    from agent.db.install import SQLGLOT_VERSION

    assert sqlglot.__version__ == SQLGLOT_VERSION


@pytest.mark.parametrize("op", ["DELETE", "UPDATE"])
@pytest.mark.parametrize("sql,expected", CASES)
def test_verdict(sql: str, expected: str, op: str) -> None:
    if op == "UPDATE":
        sql = (sql.replace("DELETE FROM ONLY public.t AS x", "UPDATE ONLY public.t AS x SET v = 1")
               .replace("DELETE FROM public.t AS x", "UPDATE public.t AS x SET v = 1")
               .replace("DELETE FROM t USING u", "UPDATE t SET v = 1 FROM u")
               .replace("delete   from\n t", "update\n t set v = 1")
               .replace("DELETE FROM t", "UPDATE t SET v = 1")
               .replace("THEN DELETE", "THEN UPDATE SET v = 1"))
    assert classify.verdict(classify.summarize(sql), "public", "t", op)[0] == expected, sql


def test_update_firing_is_not_explained_by_a_delete() -> None:
    s = classify.summarize("DELETE FROM t WHERE id = 1")
    assert classify.verdict(s, "public", "t", "UPDATE")[0] == OPAQUE


def test_upsert_counts_as_restricted_update() -> None:
    s = classify.summarize("INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 2")
    assert classify.verdict(s, "public", "t", "UPDATE")[0] == RESTRICTED


def test_quoted_identifiers_keep_case() -> None:
    s = classify.summarize('DELETE FROM "T" WHERE id = 1')
    assert classify.verdict(s, "public", "T", "DELETE")[0] == RESTRICTED
    assert classify.verdict(s, "public", "t", "DELETE")[0] == OPAQUE


def test_summary_reports_calls_and_executes() -> None:
    s = classify.summarize("SELECT purge(1); EXECUTE wipe(2); EXECUTE \"Mixed\"")
    assert s.calls == {"purge"}
    assert s.executes == ("wipe", "Mixed")
    assert s.opaque == ()


def test_inert_commands_are_not_opaque() -> None:
    s = classify.summarize("BEGIN; SET LOCAL lock_timeout = '1s'; DELETE FROM t WHERE id = 1;"
                           " COMMIT")
    assert classify.verdict(s, "public", "t", "DELETE")[0] == RESTRICTED


# -- lexer ----------------------------------------------------------------------------------

def test_normalize_removes_every_literal_and_comment() -> None:
    sql = ("SELECT 'secret''s', E'x\\'y', $$body$$, $tag$ b $tag$, 1.5e3, 42, B'101', "
           "X'ff' FROM \"T\" /* c /* nested */ */ -- trailing 7\n WHERE a = $1")
    norm = lexer.normalize(sql)
    for leak in ("secret", "x\\'y", "body", " b ", "1.5e3", "42", "101", "ff", "nested",
                 "trailing"):
        assert leak not in norm, (leak, norm)
    assert norm == ('SELECT $2, $3, $4, $5, $6, $7, $8, $9 FROM "T" WHERE a = $1')


def test_fingerprint_is_the_same_for_literals_and_bind_parameters() -> None:
    simple = lexer.fingerprint(lexer.normalize("update T set a = 1 where id = 2"))
    extended = lexer.fingerprint(lexer.normalize("UPDATE t SET a = $1 WHERE id = $2"))
    other = lexer.fingerprint(lexer.normalize("UPDATE t SET a = $1 WHERE k = $2"))
    assert simple == extended != other
    assert len(simple) == 16


def test_operators_do_not_swallow_comments() -> None:
    assert lexer.normalize("SELECT 1+--c\n2") == "SELECT $1 + $2"


def test_unterminated_constructs_run_to_the_end() -> None:
    assert lexer.normalize("SELECT 'abc") == "SELECT $1"
    assert lexer.normalize("SELECT 1 /* open") == "SELECT $1"


def test_strip_prepare() -> None:
    assert lexer.strip_prepare("PREPARE p (int, text) AS DELETE FROM t WHERE id = $1") == \
        "DELETE FROM t WHERE id = $1"
    assert lexer.strip_prepare("prepare q as update t set a = 1") == "update t set a = 1"
    assert lexer.strip_prepare("SELECT 1") is None


# -- the hot path's cache key ---------------------------------------------------------------

_CONSTANTS = frozenset({"string", "estring", "dollar", "number"})
_PIECES = list("abeEnNxXbBuU&$0123456789.'\"- \n\t;=<>*/()+_é:😀ß") + [
    "$1", "''", "--", "::", "e'", "E'", "U&'", 'U&"', "1e5", ".5", "WHERE", "id", " = "]


@given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join))
@settings(max_examples=6000, deadline=None)
def test_cache_key_splits_texts_exactly_as_the_lexer(text: str) -> None:
    # equal keys must mean equal normalized texts: the key keeps every token but constants
    # verbatim, so it is enough that it finds the same tokens as `tokens`
    key = lexer.cache_key(text)
    if key is None:
        assert any(s in text for s in ("/*", "\\")) or any(
            text[i] == "$" and not text[i + 1:i + 2].isdigit() for i in range(len(text)))
        return
    toks = lexer.tokens(text)
    if key.startswith("\x00s"):
        assert key[2:] == "".join("\x00" if k in _CONSTANTS else v for k, v in toks)
    else:
        assert key[:2] == "\x00t"
        assert key[2:] == "\x00".join("" if k in _CONSTANTS else v for k, v in toks)


def test_cache_key_examples() -> None:
    a = lexer.cache_key("UPDATE t SET a = a + -2140 WHERE id = 41203")
    assert a == lexer.cache_key("UPDATE t SET a = a + -7 WHERE id = 'x'")
    assert a != lexer.cache_key("UPDATE t SET a = a + -7 WHERE id2 = 1")
    assert a != lexer.cache_key("UPDATE t SET a = a + -7 WHERE id = 1 OR 1 = 1")
    assert lexer.cache_key("SELECT $$x$$") is None and lexer.cache_key("SELECT 'a\\'") is None
    assert lexer.cache_key("SELECT 1 /* c */") is None
    quoted = lexer.cache_key('UPDATE "t" SET a = 1 WHERE id = 2')  # the general way
    assert quoted == lexer.cache_key('UPDATE "t" SET a = 7 WHERE id = 9') != a


def test_normalize_follows_standard_conforming_strings() -> None:
    text = "DELETE FROM t WHERE status = '\\' AND '' = ' OR true --'"
    assert lexer.normalize(text) == "DELETE FROM t WHERE status = $1 AND $2 = $3"
    assert lexer.normalize(text, conforming=False) == "DELETE FROM t WHERE status = $1 OR true"


def test_normalize_is_cut_for_the_ledger_only() -> None:
    long = "SELECT " + ", ".join(["1"] * 3000)
    assert len(lexer.normalize(long)) == lexer.MAX_NORMALIZED_CHARS
    assert lexer.normalize(long).endswith("…")
    assert len(lexer.normalize(long, limit=None)) > lexer.MAX_NORMALIZED_CHARS

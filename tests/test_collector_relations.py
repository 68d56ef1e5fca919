"""Relation names extracted from (normalized) statement text with pglast, and name parsing."""

from __future__ import annotations

import pytest

from agent.collector.relations import (
    Relation,
    RelationCache,
    extract_relations,
    parse_relation,
    split_qualified_name,
)


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT * FROM public.orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1",
     ["customers", "public.orders"]),
    ("WITH recent AS (SELECT * FROM orders WHERE ts > $1) SELECT * FROM recent", ["orders"]),
    ("INSERT INTO audit.log (what) VALUES ($1)", ["audit.log"]),
    ("UPDATE orders SET status = $1 WHERE id = $2", ["orders"]),
    ("DELETE FROM customers", ["customers"]),
    ("DROP TABLE a.b, c", ["a.b", "c"]),
    ("TRUNCATE payments", ["payments"]),
    ("COPY invoices TO STDOUT", ["invoices"]),
    ('SELECT * FROM "Weird.Name", "S".t', ['"S".t', '"Weird.Name"']),
    ("SELECT * FROM Orders", ["orders"]),
    ("SELECT $1", []),
    ("this is not sql", []),
    (None, []),
])
def test_extract_relations(sql: str | None, expected: list[str]) -> None:
    assert sorted(str(r) for r in extract_relations(sql)) == sorted(expected)


def test_parse_relation_folds_like_postgresql() -> None:
    assert parse_relation("Orders") == Relation(None, "orders")
    assert parse_relation("Public.Orders") == Relation("public", "orders")
    assert parse_relation('"My Schema"."T.1"') == Relation("My Schema", "T.1")
    assert parse_relation("db.s.t") == Relation("s", "t")
    assert split_qualified_name('"a""b".c') == ('a"b', "c")
    for bad in ("", "a..b", '"open', "a.b.c.d", '"x"y'):
        with pytest.raises(ValueError):
            parse_relation(bad)


def test_cache_parses_each_fingerprint_once() -> None:
    cache = RelationCache(max_entries=2)
    first = cache.relations("SELECT * FROM a WHERE x = $1", "fp1")
    # Same fingerprint: the cached answer is used, whatever the constants were.
    assert cache.relations("SELECT * FROM a WHERE x = $1", "fp1") is first
    assert cache.relations(None, "fp2") == ()  # unknown text is not cached as "no relations"
    assert cache.relations("SELECT * FROM b", "fp2") == (Relation(None, "b"),)
    cache.relations("SELECT * FROM c", "fp3")  # evicts fp1 (least recently used)
    assert cache.relations("SELECT * FROM z", "fp1") == (Relation(None, "z"),)

"""Relation (table, view) names referenced by a statement, for `pgwarden statements --table`.

The collector extracts them at ingest from the stored statement text with pglast (libpg_query,
PostgreSQL's own parser) and its `referenced_relations` visitor: every RangeVar of the statement
(FROM, JOIN, INSERT INTO, UPDATE, DELETE, COPY, TRUNCATE, LOCK, ALTER/CREATE ...), the objects of
DROP TABLE / DROP VIEW, and not the names of CTEs. Normalized text (`$1` for constants) parses
like the original. Text that does not parse (or is unknown) references no relation.

Names are compared the way PostgreSQL resolves identifiers: unquoted parts are folded to lower
case, "quoted" parts are kept as written. A catalog prefix (`db.schema.table`) is dropped.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

from pglast.parser import ParseError
from pglast.stream import maybe_double_quote_name
from pglast.visitors import referenced_relations

from agent.sqlnames import split_qualified_name


class Relation(NamedTuple):
    """A referenced relation: `schema` is None when the statement did not qualify the name."""

    schema: str | None
    name: str

    def __str__(self) -> str:
        """The name as SQL would spell it: `public.orders`, `"Weird.T"`."""
        name = maybe_double_quote_name(self.name)
        return name if self.schema is None else f"{maybe_double_quote_name(self.schema)}.{name}"


def parse_relation(text: str) -> Relation:
    """`orders` -> Relation(None, "orders"); `Public.Orders` -> Relation("public", "orders").

    Raises ValueError when `text` is not a (possibly qualified, possibly quoted) relation name.
    """
    parts = split_qualified_name(text.strip())
    if len(parts) > 3:
        raise ValueError(f"{text!r} has more than three dotted parts")
    return Relation(parts[-2] if len(parts) > 1 else None, parts[-1])


def extract_relations(statement: str | None) -> tuple[Relation, ...]:
    """The relations `statement` references, sorted; () when it is None or does not parse."""
    if not statement:
        return ()
    try:
        names = referenced_relations(statement)
    except (ParseError, RecursionError, ValueError):
        return ()
    found: set[Relation] = set()
    for name in names:
        try:
            found.add(parse_relation(name))
        except ValueError:
            continue
    return tuple(sorted(found, key=lambda r: (r.schema or "", r.name)))


class RelationCache:
    """`extract_relations` with a bounded LRU cache keyed by fingerprint (thread-safe).

    Statements with the same libpg_query fingerprint reference the same relations, so the parse
    happens once per distinct statement shape. Text without a fingerprint is parsed every time.
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Relation, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def relations(self, statement: str | None, fingerprint: str | None) -> tuple[Relation, ...]:
        """The relations of `statement`, from the cache when `fingerprint` was seen before."""
        if not fingerprint:
            return extract_relations(statement)
        with self._lock:
            cached = self._entries.get(fingerprint)
            if cached is not None:
                self._entries.move_to_end(fingerprint)
                return cached
        found = extract_relations(statement)
        if statement:  # an unknown text says nothing about the fingerprint's relations
            with self._lock:
                self._entries[fingerprint] = found
                if len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
        return found

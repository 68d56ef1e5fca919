"""Per-backend state, kept in PL/Python's ``GD`` (shared by pgwarden's functions in one backend).

What is cached, and when it is refreshed:

* the compiled policy and the guarded relations (relid -> schema, name, protect entry): reloaded
  when ``pgwarden.policy_head`` shows a new (version, epoch); read once per transaction, so a
  policy applied by another session takes effect at this session's next transaction. The epoch
  is bumped whenever the set or the names of guarded objects change (auto-guard, rename, drop);
* the session (session_user, attested identity, group memberships): once per transaction;
* per-transaction row counts per relation, partitions adding up in their partitioned table
  (rule ``max_rows``, ``transaction`` limit), reset when
  the top-level transaction id changes; savepoint rollbacks do not un-count (fail strict);
* statement summaries, by exact text and by literal-free normalized text (bounded LRU).

``GD`` is writable only by PL/Python code, i.e. by superusers (plpython3u is untrusted), so
nothing here can be forged by the sessions being guarded.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pgwarden_ext import classify, lexer
from pgwarden_ext.policy import Compiled, Rules, Session

GD_KEY = "pgwarden"
SUMMARY_CACHE_SIZE = 2048


@dataclass(frozen=True)
class Relation:
    """A guarded relation: names as in the catalog, the protect entry guarding it."""

    relid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind
    protect: str
    root: int  # the partition tree's root (itself if not a partition): row counts add up there

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


class State:
    """Everything pgwarden caches in one backend (see module docstring)."""

    def __init__(self, plpy: Any) -> None:
        self.head_key: tuple[int, int] | None = None
        self.compiled: Compiled | None = None
        self.sha256: str | None = None
        self.relations: dict[int, Relation] = {}
        self.session = Session("")
        self.xid: str | None = None
        self.txn_rows: dict[int, int] = {}
        self.rules_cache: dict[str, Rules] = {}
        self.fk_cache: dict[tuple[int, str], list[tuple[str, str, str]]] = {}
        self.noted: set[tuple[str | None, str]] = set()
        self.summaries: OrderedDict[str, classify.Summary] = OrderedDict()
        self.busy = False
        self.dblink_schema: str | None = None
        self._head_plan = plpy.prepare(
            "SELECT version, epoch, session_user::text AS su FROM pgwarden.policy_head")

    # -- refresh -----------------------------------------------------------------------------

    def begin(self, plpy: Any, xid: str | None, head: tuple[int, int] | None = None,
              user: str | None = None) -> None:
        """Refresh for transaction `xid` (top-level id as text; None when none is assigned yet:
        then everything is re-read). `head` (policy version, epoch) and `user` (session_user)
        may be passed by a caller that read them cheaply; otherwise one query reads them."""
        new_xact = xid is None or xid != self.xid
        if not new_xact and (head is None or head == self.head_key):
            return
        if new_xact:
            self.xid = xid
            self.txn_rows = {}
            self.noted = set()
        if head is None or user is None:
            row = plpy.execute(self._head_plan)[0]
            head, user = (row["version"], row["epoch"]), row["su"]
        if head != self.head_key:
            self._load(plpy, head[0])
            self.head_key = head
        ident: str | None = None
        groups: frozenset[str] = frozenset()
        if self.compiled is not None and self.compiled.uses_identities:
            ident = plpy.execute("SELECT pgwarden.session_identity() AS i")[0]["i"]
        if self.compiled is not None and self.compiled.uses_groups:
            groups = frozenset(r["rolname"] for r in plpy.execute(
                "SELECT rolname::text FROM pg_catalog.pg_roles"
                " WHERE pg_catalog.pg_has_role(session_user, oid, 'MEMBER')"))
        session = Session(user, ident, groups)
        if session != self.session:
            self.session = session
            self.rules_cache = {}

    def reload(self, plpy: Any) -> None:
        """Forget the cached policy and guarded objects (used when a trigger fires on a relation
        this backend does not know yet: it was guarded in this very transaction)."""
        self.head_key = None
        self.xid = None
        self.begin(plpy, None)

    def _load(self, plpy: Any, version: int) -> None:
        self.compiled, self.sha256 = None, None
        if version:
            row = plpy.execute(plpy.prepare(
                "SELECT doc::text AS doc, sha256 FROM pgwarden.policy WHERE version = $1",
                ["integer"]), [version])[0]
            self.compiled = Compiled(json.loads(row["doc"]))
            self.sha256 = row["sha256"]
        self.relations = {
            r["relid"]: Relation(r["relid"], r["nspname"], r["relname"], r["relkind"], r["protect"],
                                 r["root"])
            for r in plpy.execute(
                "SELECT p.objid::bigint AS relid, n.nspname::text, c.relname::text,"
                " c.relkind::text, p.protect,"
                " coalesce(pg_catalog.pg_partition_root(c.oid), c.oid)::bigint AS root"
                " FROM pgwarden.protected p"
                " JOIN pg_catalog.pg_class c ON c.oid = p.objid"
                " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE p.classid = 'pg_catalog.pg_class'::pg_catalog.regclass")}
        self.rules_cache = {}
        self.fk_cache = {}

    # -- lookups -----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.head_key[0] if self.head_key else 0

    def rules(self, protect: str) -> Rules | None:
        """Effective rules of a protect entry for this session (None without a policy)."""
        if self.compiled is None or protect not in self.compiled.protect:
            return None
        rules = self.rules_cache.get(protect)
        if rules is None:
            rules = self.rules_cache[protect] = self.compiled.rules(protect, self.session)
        return rules

    def summary(self, text: str) -> classify.Summary:
        """`classify.summarize(text)`, cached by exact and by normalized text."""
        cache = self.summaries
        hit = cache.get(text)
        if hit is None:
            norm = "n:" + lexer.normalize(text)
            hit = cache.get(norm)
            if hit is None:
                hit = classify.summarize(norm[2:])
                if hit.opaque == ("unparseable",):
                    # normalization can break typed literals (DATE '...'): try the real text
                    hit = classify.summarize(text)
                cache[norm] = hit
            cache[text] = hit
        cache.move_to_end(text)
        while len(cache) > SUMMARY_CACHE_SIZE:
            cache.popitem(last=False)
        return hit

    def fk_ancestors(self, plpy: Any, relid: int, op: str) -> list[tuple[str, str, str]]:
        """(schema, table, op) of statements on other tables that reach `relid` with `op`
        through cascading foreign keys (ON DELETE CASCADE/SET NULL/SET DEFAULT, ON UPDATE ...)."""
        key = (relid, op)
        if key not in self.fk_cache:
            self.fk_cache[key] = [(r["nspname"], r["relname"], r["op"]) for r in plpy.execute(
                plpy.prepare(_FK_ANCESTORS, ["oid", "text"]), [relid, op])]
        return self.fk_cache[key]


_FK_ANCESTORS = """
WITH RECURSIVE anc(relid, op, depth) AS (
    SELECT $1::oid, $2::text, 0
  UNION
    SELECT c.confrelid, x.pop, a.depth + 1
      FROM anc a
      JOIN pg_catalog.pg_constraint c ON c.conrelid = a.relid AND c.contype = 'f'
      CROSS JOIN (VALUES ('DELETE'), ('UPDATE')) AS x(pop)
     WHERE a.depth < 16 AND (
           (a.op = 'DELETE' AND x.pop = 'DELETE' AND c.confdeltype = 'c')
        OR (a.op = 'UPDATE' AND x.pop = 'UPDATE' AND c.confupdtype IN ('c', 'n', 'd'))
        OR (a.op = 'UPDATE' AND x.pop = 'DELETE' AND c.confdeltype IN ('n', 'd'))))
SELECT DISTINCT n.nspname::text, r.relname::text, a.op
  FROM anc a
  JOIN pg_catalog.pg_class r ON r.oid = a.relid
  JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
 WHERE a.depth > 0
"""


def get(plpy: Any, GD: dict[str, Any], xid: str | None = None,
        head: tuple[int, int] | None = None, user: str | None = None) -> State:
    """The backend's `State`, created on first use and refreshed for transaction `xid`
    (see `State.begin`)."""
    st = GD.get(GD_KEY)
    if st is None:
        st = GD[GD_KEY] = State(plpy)
    st.begin(plpy, xid, head, user)
    return st

"""Per-backend state, kept in PL/Python's ``GD`` (shared by pgwarden's functions in one backend).

What is cached, and when it is refreshed:

* the compiled policy and the guarded relations (relid -> schema, name, protect entry): reloaded
  when ``pgwarden.policy_head`` shows a new (version, epoch). The epoch is bumped whenever the
  set or the names of guarded objects change (auto-guard, rename, drop);
* the session (session_user, attested identity, group memberships): once per transaction;
* rows changed per relation and transaction, partitions adding up in their partitioned table
  (rule ``max_rows``, ``transaction`` limit); savepoint rollbacks do not un-count (fail strict);
* statement summaries, by exact text and by literal-free normalized text (bounded LRU), and
  where-verdicts per (statement, relation, operation) for the hot path (`guard.needs_check`).

``GD`` is writable only by PL/Python code, i.e. by superusers (plpython3u is untrusted), so
nothing here can be forged by the sessions being guarded. What sessions *can* do is call the
runtime functions with made-up arguments (they have EXECUTE: trigger bodies run as the
invoker). So `begin` reads the transaction id, policy head and session_user itself, and values
the hot path takes from its caller only ever select cache entries or add rows:

* per-transaction row counts are kept per *claimed* transaction id; a made-up id adds a bucket
  but can never empty the real one, because only `begin` (which reads the real id) drops
  buckets. Limits are checked against the sum of the open buckets, which is never less than the
  real transaction's count;
* verdicts are a pure function of their key (statement text, relation, operation) and of the
  catalog as of the policy head, so a made-up call can only store what a real one would.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pgwarden_ext import __version__, classify, ledger, lexer
from pgwarden_ext.policy import Compiled, Rules, Session

GD_KEY = "pgwarden"
SUMMARY_CACHE_SIZE = 2048
VERDICT_CACHE_SIZE = 4096
OPEN_BUCKETS = 1024
"""Transaction buckets the hot path may open before `begin` must prune them. Each pruning costs a
full check (`guard.on_write`, ~0.7 ms), so in autocommit workloads, where every statement opens
a bucket, this sets how often that happens; the limits stay exact either way (open buckets only
ever add up to more than the real transaction's count, and crossing a limit sends the firing to
the full check, which prunes first)."""


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
        self.xid: str | None = None  # the real top-level transaction id, as `begin` last read it
        self.rows: dict[str | None, dict[int, int]] = {}  # claimed xid -> root relid -> rows
        self.open_rows: dict[int, int] = {}  # root relid -> rows in all of `rows`
        self.refresh_each_transaction = False  # the policy matches identities or groups
        self.rules_cache: dict[str, Rules] = {}
        self.fk_cache: dict[tuple[int, str], list[tuple[str, str, str]]] = {}
        self.noted: set[tuple[str | None, str, str, str]] = set()
        self.summaries: OrderedDict[tuple[str, str], tuple[classify.Summary, bool]] = \
            OrderedDict()
        self.verdicts: dict[tuple[str, int, str], str] = {}
        self.busy = False
        self.dblink_schema: str | None = None
        self._head_plan = plpy.prepare(
            "SELECT h.version, h.epoch, session_user::text AS su,"
            " pg_catalog.pg_current_xact_id_if_assigned()::text AS xid"
            " FROM pgwarden.policy_head h")

    # -- refresh -----------------------------------------------------------------------------

    def begin(self, plpy: Any) -> None:
        """Refresh from the database: the policy head (reload when it moved), the real top-level
        transaction id (None before the transaction wrote anything; a new id resets what is
        counted per transaction), session_user, and once per transaction the identity and
        groups when the policy matches them."""
        row = plpy.execute(self._head_plan)[0]
        head, xid, user = (row["version"], row["epoch"]), row["xid"], row["su"]
        new_xact = xid is None or xid != self.xid
        # only the real transaction's bucket survives (see module docstring)
        bucket = self.rows.get(xid, {}) if xid is not None else {}
        self.rows = {xid: bucket} if xid is not None else {}
        self.open_rows = dict(bucket)
        if not new_xact and head == self.head_key and user == self.session.user:
            return
        if new_xact:
            self.xid = xid
            self.noted = set()
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
        self.begin(plpy)

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
        self.verdicts = {}
        self.refresh_each_transaction = self.compiled is not None and (
            self.compiled.uses_identities or self.compiled.uses_groups)

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

    def summary(self, plpy: Any, text: str,
                conforming: bool = True) -> tuple[classify.Summary, bool]:
        """(`classify.summarize` of `text`, whether it holds for every text with the same
        normalized form), cached by exact and by normalized text, the latter also in the table
        pgwarden.classified that every backend of the database shares: a new backend then
        needs no sqlglot (whose import costs 0.15-0.5 s) for shapes seen before. Only pgwarden
        writes that table, each row the summary of its own text, so no session can plant a
        wrong one. `conforming`: the session's standard_conforming_strings (it changes where
        strings end when `text` has backslashes).

        The summary of the normalized text holds for all its literal values. When that text
        does not parse (normalization can break typed literals: DATE '...'), the real text is
        parsed instead, and that summary, which may depend on the literals, is cached for that
        exact text only."""
        cache = self.summaries
        exact = ("t" if conforming or "\\" not in text else "t-nonconforming", text)
        hit = cache.get(exact)
        if hit is None:
            norm = ("n", lexer.normalize(text, conforming, limit=None))
            hit = cache.get(norm)
            if hit is None:
                hit = cache[norm] = (self._shared_summary(plpy, norm[1]), True)
            if hit[0].opaque == ("unparseable",) and (conforming or "\\" not in text):
                # sqlglot reads backslashes as standard_conforming_strings = on does
                hit = (classify.summarize(text), False)
            cache[exact] = hit
        cache.move_to_end(exact)
        while len(cache) > SUMMARY_CACHE_SIZE:
            cache.popitem(last=False)
        return hit

    def _shared_summary(self, plpy: Any, normalized: str) -> classify.Summary:
        key = f"{__version__}/{classify.CLASSIFIER}\n{normalized}"
        rows = plpy.execute(plpy.prepare(
            "SELECT summary::text AS s FROM pgwarden.classified"
            " WHERE key = pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8')) AND statement = $1",
            ["text"]), [key])
        if rows:
            return classify.from_json(json.loads(rows[0]["s"]))
        summary = classify.summarize(normalized)
        try:  # committed at once, so that no user transaction ever waits on another's insert
            ledger.autonomous(plpy, self, "SELECT pgwarden._remember_classified("
                              + plpy.quote_literal(key) + ", "
                              + plpy.quote_literal(json.dumps(classify.to_json(summary)))
                              + ")::text")
        except (plpy.SPIError, RuntimeError):
            pass  # only a cache: the next backend classifies the text again
        return summary

    def remember_verdict(self, query: str, relid: int, op: str, kind: str,
                         literal_free: bool) -> None:
        """Keep the where-verdict of `query` on (`relid`, `op`) for the hot path, by exact text
        and, when it holds for every literal value, by `lexer.cache_key`. Not for texts with
        backslashes: what they mean depends on standard_conforming_strings, which the hot path
        does not read."""
        if "\\" in query:
            return
        if len(self.verdicts) >= VERDICT_CACHE_SIZE:
            self.verdicts = {}
        self.verdicts[(query, relid, op)] = kind
        key = lexer.cache_key(query) if literal_free else None
        if key is not None:  # keys hold NUL characters, which no statement text can
            self.verdicts[(key, relid, op)] = kind

    def counted(self, root: int) -> int:
        """Rows counted for `root` in every open transaction bucket (see module docstring)."""
        return self.open_rows.get(root, 0)

    def count(self, xid: str | None, root: int, n: int) -> None:
        bucket = self.rows.setdefault(xid, {})
        bucket[root] = bucket.get(root, 0) + n
        self.open_rows[root] = self.open_rows.get(root, 0) + n

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


def get(plpy: Any, GD: dict[str, Any]) -> State:
    """The backend's `State`, created on first use and refreshed (see `State.begin`)."""
    st = GD.get(GD_KEY)
    if st is None:
        st = GD[GD_KEY] = State(plpy)
    st.begin(plpy)
    return st

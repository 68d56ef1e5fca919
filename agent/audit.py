"""The pgwarden ledger seen from outside the database: chain, head, list, and an independent
verification of the hash chain (this code recomputes every hash itself; it does not trust the
extension's functions, which a superuser could have replaced).

Chain rule (pg_extension/sql/0.1/20_ledger.sql, table pgwarden.ledger)::

    hash(seq) = SHA-256( hash(seq - 1) || UTF-8( str(seq) + "\\n" + payload ) )
    hash(0)   = 32 zero bytes; seq runs 1, 2, 3, ... without gaps

`verify` names the first record that breaks the chain. Edits, deletions, insertions and
reordering break it; cutting records off the end does not (the shorter chain is still a chain),
so the head must be anchored elsewhere: `head` prints it, and ``verify(expect_head=...)`` checks
that an anchored head is still part of the chain. A superuser can rewrite and re-hash the whole
chain; only an anchor detects that.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from agent.db.conn import DbError, connect, server_error

GENESIS = bytes(32)


@dataclass
class Verification:
    """Outcome of `verify`: `ok`, records checked, the head found, and the first bad record
    (`bad_seq`, `problem`) when not ok."""

    ok: bool
    records: int
    head_seq: int
    head_hash: str
    chained_now: int = 0
    chain_error: str | None = None
    bad_seq: int | None = None
    problem: str | None = None
    anchor: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def link(prev: bytes, seq: int, payload: str) -> bytes:
    """The hash of record `seq` with `payload`, following `prev`."""
    return hashlib.sha256(prev + f"{seq}\n{payload}".encode("utf-8")).digest()


def chain(dsn: str, max_rows: int = 10000) -> int:
    """Run the chainer once; returns how many staged records it chained (0 when another
    chainer holds the lock)."""
    with connect(dsn) as conn:
        try:
            return int(conn.execute("SELECT pgwarden.chain_pending(%s)", [max_rows]).fetchone()[0])
        except psycopg.Error as e:
            raise DbError(f"chaining the ledger: {server_error(e)}") from None


def head(dsn: str, chain_first: bool = True) -> dict[str, Any]:
    """{"seq", "hash"} of the last chained record (after chaining what is pending)."""
    with connect(dsn) as conn:
        try:
            if chain_first:
                conn.execute("SELECT pgwarden.chain_pending()")
            seq, hash_ = conn.execute("SELECT seq, hash FROM pgwarden.head()").fetchone()
        except psycopg.Error as e:
            raise DbError(f"reading the ledger head: {server_error(e)}") from None
    return {"seq": seq, "hash": hash_}


def records(dsn: str, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """Ledger records with seq > `since`, oldest first: {"seq", "hash", "record": {...}}."""
    with connect(dsn) as conn:
        try:
            rows = conn.execute(
                "SELECT seq, payload, encode(hash, 'hex') FROM pgwarden.ledger WHERE seq > %s"
                " ORDER BY seq LIMIT %s", [since, limit]).fetchall()
        except psycopg.Error as e:
            raise DbError(f"reading the ledger: {server_error(e)}") from None
    return [{"seq": s, "hash": h, "record": json.loads(p)} for s, p, h in rows]


def verify(dsn: str, expect_head: str | None = None, chain_first: bool = True) -> Verification:
    """Check the whole chain (see module docstring). `expect_head` is an anchored head hash
    (hex), optionally as "SEQ:HASH"."""
    chained, chain_error = 0, None
    if chain_first:
        try:
            chained = chain(dsn)
        except DbError as e:  # a tampered chain can break the chainer: verify anyway
            chain_error = str(e)
    with connect(dsn) as conn:
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                rows = conn.execute("SELECT seq, payload, prev_hash, hash FROM pgwarden.ledger"
                                    " ORDER BY seq").fetchall()
                head_seq, head_hash = conn.execute(
                    "SELECT seq, hash FROM pgwarden.ledger_head").fetchone()
        except psycopg.Error as e:
            raise DbError(f"reading the ledger: {server_error(e)}") from None
    result = Verification(True, len(rows), head_seq, bytes(head_hash).hex(), chained,
                          chain_error)

    def bad(seq: int, problem: str) -> Verification:
        result.ok, result.bad_seq, result.problem = False, seq, problem
        return result

    prev, expected = GENESIS, 1
    for seq, payload, prev_hash, stored in rows:
        if seq != expected:
            what = "missing (deleted)" if seq > expected else "duplicated or inserted"
            return bad(seq, f"expected record {expected} here but found {seq}: records are "
                            f"{what}")
        if bytes(prev_hash) != prev:
            return bad(seq, "its prev_hash is not the hash of the record before it: records "
                            "were reordered, inserted or re-hashed")
        if link(prev, seq, payload) != bytes(stored):
            return bad(seq, "its hash does not match its content: the record was edited")
        prev, expected = bytes(stored), expected + 1
    last_seq = expected - 1
    if (head_seq, bytes(head_hash)) != (last_seq, prev):
        return bad(last_seq + 1 if head_seq > last_seq else head_seq,
                   f"the ledger head says record {head_seq} (hash {bytes(head_hash).hex()[:16]}…)"
                   f" but the chain ends at record {last_seq}: records were removed from the end"
                   " or the head was edited")
    if expect_head:
        want_seq, _, want_hash = expect_head.rpartition(":")
        want_hash = want_hash.strip().lower()
        found = [s for s, _, _, h in rows if bytes(h).hex() == want_hash]
        result.anchor = {"expected": expect_head, "found_at": found[0] if found else None}
        if not found or (want_seq and int(want_seq) != found[0]):
            return bad(last_seq + 1, f"the anchored head {want_hash[:16]}… is not in the chain "
                                     f"(it ends at record {last_seq}): the ledger was truncated "
                                     "or rewritten after the anchor was taken")
    return result

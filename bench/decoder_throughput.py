"""Throughput of the pgwire decoder (agent.pgwire.session.Connection) on realistic streams.

    .venv/bin/python -m bench.decoder_throughput [--transactions N] [--repeat R]

Streams are built with agent.pgwire.encode to look like what the capture delivers: one chunk
per backend read/write. pgbench select-only issues, per transaction, one frontend chunk (Query,
or Parse/Bind/Describe/Execute/Sync, or Bind/Describe/Execute/Sync with -M prepared) and one
backend chunk (RowDescription, DataRow, CommandComplete, ReadyForQuery). tpcb-like is seven
such round trips. "large result" is SELECT of 100k rows written in 8 KiB chunks (messages cut
at chunk boundaries); "copy in" is COPY FROM STDIN of 20 MB read in 8 KiB chunks. The redactor
(agent.redact) is measured too, since the agent runs it per statement.

Prints, per stream: microseconds per chunk, per message, per transaction, and messages/s.
Each run is timed in slices of ~1000 chunks; "best" is the fastest slice over R runs (what a
quiet machine does), "median" the median slice (the machine is noisy, about +-15%). Records
are taken every 256 chunks, as the agent would. Not a test: no assertion on timings.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable

from agent.pgwire import encode as m
from agent.pgwire.session import BACKEND, FRONTEND, Connection

Chunk = tuple[int, bytes]  # (direction, bytes)

SELECT_SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"
SELECT_PARAM = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"


def _startup() -> list[Chunk]:
    return [
        (FRONTEND, m.startup_message({"user": "bench", "database": "bench",
                                      "application_name": "pgbench"})),
        (BACKEND, m.authentication_ok() + m.parameter_status("client_encoding", "UTF8")
         + m.parameter_status("server_version", "15.8") + m.backend_key_data(4242, 1)
         + m.ready_for_query("I")),
    ]


def _select_response(value: int) -> bytes:
    return (m.row_description(["abalance"]) + m.data_row([str(value).encode()])
            + m.command_complete("SELECT 1") + m.ready_for_query("I"))


def simple_select(n: int, rng: random.Random) -> tuple[list[Chunk], int]:
    chunks = _startup()
    for _ in range(n):
        aid = rng.randint(1, 100000)
        chunks.append((FRONTEND, m.query(SELECT_SQL.format(aid))))
        chunks.append((BACKEND, _select_response(rng.randint(-5000, 5000))))
    return chunks, n


def extended_select(n: int, rng: random.Random) -> tuple[list[Chunk], int]:
    chunks = _startup()
    for _ in range(n):
        aid = str(rng.randint(1, 100000)).encode()
        chunks.append((FRONTEND, m.parse("", SELECT_PARAM) + m.bind("", "", [aid])
                       + m.describe("P") + m.execute() + m.sync()))
        chunks.append((BACKEND, m.parse_complete() + m.bind_complete()
                       + _select_response(rng.randint(-5000, 5000))))
    return chunks, n


def prepared_select(n: int, rng: random.Random) -> tuple[list[Chunk], int]:
    chunks = _startup()
    chunks.append((FRONTEND, m.parse("P0_1", SELECT_PARAM, [23]) + m.sync()))
    chunks.append((BACKEND, m.parse_complete() + m.ready_for_query("I")))
    for _ in range(n):
        aid = str(rng.randint(1, 100000)).encode()
        chunks.append((FRONTEND, m.bind("", "P0_1", [aid]) + m.describe("P") + m.execute()
                       + m.sync()))
        chunks.append((BACKEND, m.bind_complete() + _select_response(rng.randint(-5000, 5000))))
    return chunks, n


def tpcb_like(n: int, rng: random.Random) -> tuple[list[Chunk], int]:
    chunks = _startup()
    for _ in range(n):
        aid, bid, tid = rng.randint(1, 100000), rng.randint(1, 1), rng.randint(1, 10)
        delta = rng.randint(-5000, 5000)
        steps = [
            ("BEGIN;", m.command_complete("BEGIN") + m.ready_for_query("T")),
            (f"UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};",
             m.command_complete("UPDATE 1") + m.ready_for_query("T")),
            (f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};",
             m.row_description(["abalance"]) + m.data_row([b"1234"])
             + m.command_complete("SELECT 1") + m.ready_for_query("T")),
            (f"UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};",
             m.command_complete("UPDATE 1") + m.ready_for_query("T")),
            (f"UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};",
             m.command_complete("UPDATE 1") + m.ready_for_query("T")),
            ("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES "
             f"({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);",
             m.command_complete("INSERT 0 1") + m.ready_for_query("T")),
            ("END;", m.command_complete("COMMIT") + m.ready_for_query("I")),
        ]
        for sql, response in steps:
            chunks.append((FRONTEND, m.query(sql)))
            chunks.append((BACKEND, response))
    return chunks, n


def _cut(stream: bytes, size: int, direction: int) -> list[Chunk]:
    return [(direction, stream[i:i + size]) for i in range(0, len(stream), size)]


def large_result(n: int, rng: random.Random) -> tuple[list[Chunk], int]:
    rows = 100_000
    chunks = _startup()
    chunks.append((FRONTEND, m.query("SELECT g, md5(g::text) FROM generate_series(1, 100000) g")))
    body = bytearray(m.row_description(["g", "md5"]))
    for i in range(rows):
        body += m.data_row([str(i).encode(), b"%032x" % rng.getrandbits(128)])
    body += m.command_complete(f"SELECT {rows}") + m.ready_for_query("I")
    chunks += _cut(bytes(body), 8192, BACKEND)
    return chunks, 1


def copy_in(n: int, rng: random.Random) -> tuple[list[Chunk], int]:
    lines = 400_000
    chunks = _startup()
    chunks.append((FRONTEND, m.query("COPY t (a, b) FROM STDIN")))
    chunks.append((BACKEND, m.copy_in_response((0, 0))))
    data = bytearray()
    for i in range(lines):  # psql sends one CopyData per line
        data += m.copy_data(b"%d\t%032x\n" % (i, rng.getrandbits(128)))
    data += m.copy_done()
    chunks += _cut(bytes(data), 8192, FRONTEND)
    chunks.append((BACKEND, m.command_complete(f"COPY {lines}") + m.ready_for_query("I")))
    return chunks, 1


def count_messages(chunks: list[Chunk]) -> int:
    """Messages in the streams (startup packet counted as one)."""
    total = 0
    for direction in (FRONTEND, BACKEND):
        stream = b"".join(c for d, c in chunks if d == direction)
        off = 0
        if direction == FRONTEND:
            off = int.from_bytes(stream[:4], "big")
            total += 1
        while off + 5 <= len(stream):
            off += 1 + int.from_bytes(stream[off + 1:off + 5], "big")
            total += 1
    return total


SLICE = 1024


def run(chunks: list[Chunk]) -> tuple[list[float], int]:
    """Seconds per slice of SLICE chunks (taking records every 256 chunks), and records."""
    conn = Connection()
    pos = [0, 0]
    feed = conn.feed
    take = conn.take_records
    records = 0
    slices = []
    gc.collect()
    clock = time.perf_counter
    for start in range(0, len(chunks), SLICE):
        t0 = clock()
        for i in range(start, min(start + SLICE, len(chunks))):
            direction, data = chunks[i]
            feed(direction, pos[direction], data, i)
            pos[direction] += len(data)
            if not i & 255:
                records += len(take())
        slices.append((clock() - t0) / (min(start + SLICE, len(chunks)) - start))
    conn.close(len(chunks))
    records += len(take())
    return slices, records


def bench_redact(repeat: int) -> None:
    from agent.redact import Redactor

    rng = random.Random(7)
    texts = [SELECT_SQL.format(rng.randint(1, 10**6)) for _ in range(2000)]
    for label, cache_size in (("redact, cold (all distinct texts, no cache hit)", 0),
                              ("redact, warm (cache hit)", 4096)):
        best = float("inf")
        for _ in range(repeat):
            r = Redactor(cache_size=cache_size)
            if cache_size:
                for t in texts:
                    r.redact(t)
            t0 = time.perf_counter()
            for t in texts:
                r.redact(t)
            best = min(best, time.perf_counter() - t0)
        print(f"{label:<52} {best / len(texts) * 1e6:8.1f} us/statement")


STREAMS: list[tuple[str, Callable[[int, random.Random], tuple[list[Chunk], int]]]] = [
    ("pgbench select-only, -M simple", simple_select),
    ("pgbench select-only, -M extended", extended_select),
    ("pgbench select-only, -M prepared", prepared_select),
    ("pgbench tpcb-like, -M simple", tpcb_like),
    ("large result (100k rows, 8 KiB chunks)", large_result),
    ("COPY FROM STDIN (400k lines, 8 KiB chunks)", copy_in),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transactions", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'stream':<44} {'us/chunk':>15} {'us/msg':>8} {'us/txn':>15} {'msgs/s':>11} "
          f"{'records':>8}")
    print(f"{'':<44} {'best / median':>15} {'best':>8} {'best / median':>15} {'best':>11}")
    for name, build in STREAMS:
        chunks, txns = build(args.transactions, random.Random(42))
        msgs_per_chunk = count_messages(chunks) / len(chunks)
        chunks_per_txn = len(chunks) / txns
        slices: list[float] = []
        records = 0
        for _ in range(args.repeat):
            s, records = run(chunks)
            slices += s
        best = min(slices)
        median = statistics.median(slices)
        print(f"{name:<44} {best * 1e6:6.2f} / {median * 1e6:6.2f} "
              f"{best / msgs_per_chunk * 1e6:8.3f} "
              f"{best * chunks_per_txn * 1e6:6.1f} / {median * chunks_per_txn * 1e6:6.1f} "
              f"{msgs_per_chunk / best:11,.0f} {records:8}")
    bench_redact(args.repeat)


if __name__ == "__main__":
    main()

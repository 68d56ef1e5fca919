"""pgwire decoder under hypothesis: random bytes, garbage, truncated streams, valid sessions cut at
every offset and fed in random chunkings. Nothing may escape feed()/close(), no internal error
path may be hit (`decode_errors == 0`: malformed input is handled by design, not by the safety
net), and valid traffic after garbage decodes as if the garbage had never been there."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.pgwire import encode as m
from agent.pgwire.records import INCOMPLETE, SKIPPED, Statement
from agent.pgwire.session import BACKEND, FRONTEND, Connection
from tests.pgwire_relay import comparable, replay, statements

F, B = FRONTEND, BACKEND
# PGWARDEN_FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the suite under a minute.
FUZZ = settings(deadline=None, max_examples=int(os.environ.get("PGWARDEN_FUZZ_EXAMPLES", "150")),
                suppress_health_check=list(HealthCheck))

STARTUP = [
    (F, m.startup_message({"user": "fuzz", "database": "db"})),
    (B, m.authentication_ok() + m.parameter_status("client_encoding", "UTF8")
     + m.backend_key_data(7, 7) + m.ready_for_query("I")),
]


def _select(sql: str, n: int, status: str = "I") -> tuple[bytes, bytes]:
    be = m.row_description(["c"]) + b"".join(m.data_row([b"%d" % i]) for i in range(n))
    return m.query(sql), be + m.command_complete(f"SELECT {n}") + m.ready_for_query(status)


# Building blocks of a valid conversation: (frontend bytes, backend bytes) round trips.
def blocks() -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    text = st.text(alphabet=st.characters(blacklist_characters="\x00'", codec="utf-8"),
                   max_size=30)

    def simple(t: str, n: int) -> tuple[bytes, bytes]:
        return _select(f"select '{t}' from generate_series(1, {n})", n)

    def multi(t: str, fail: bool) -> tuple[bytes, bytes]:
        sql = f"insert into t values ('{t}'); select 1/0; select 2" if fail else \
            f"insert into t values ('{t}'); select 2"
        be = m.command_complete("INSERT 0 1")
        if fail:
            be += m.error_response(sqlstate="22012", message_text="division by zero")
        else:
            be += m.row_description(["c"]) + m.data_row([b"2"]) + m.command_complete("SELECT 1")
        return m.query(sql), be + m.ready_for_query("I")

    def extended(t: str, n: int, fail: bool) -> tuple[bytes, bytes]:
        fe = m.parse("", "select $1") + m.bind("", "", [t.encode()]) + m.describe("P") \
            + m.execute() + m.parse("", "update t set a = $1") + m.bind("", "", [b"1"]) \
            + m.execute() + m.sync()
        be = m.parse_complete() + m.bind_complete() + m.row_description(["c"])
        be += b"".join(m.data_row([t.encode()]) for _ in range(n))
        if fail:
            be += m.error_response(sqlstate="57014", message_text="canceled")
        else:
            be += m.command_complete(f"SELECT {n}") + m.parse_complete() + m.bind_complete() \
                + m.command_complete("UPDATE 3")
        return fe, be + m.ready_for_query("I")

    def prepared(n: int) -> tuple[bytes, bytes]:
        fe = m.parse(f"s{n}", "select 1") + m.sync() + m.bind("", f"s{n}") + m.execute() \
            + m.sync() + m.close("S", f"s{n}") + m.sync()
        be = m.parse_complete() + m.ready_for_query("I") + m.bind_complete() \
            + m.data_row([b"1"]) + m.command_complete("SELECT 1") + m.ready_for_query("I") \
            + m.close_complete() + m.ready_for_query("I")
        return fe, be

    def copy_in(n: int) -> tuple[bytes, bytes]:
        fe = m.query("copy t from stdin") + b"".join(m.copy_data(b"%d\n" % i) for i in range(n)) \
            + m.copy_done()
        return fe, m.copy_in_response() + m.command_complete(f"COPY {n}") + m.ready_for_query("I")

    def copy_out(n: int) -> tuple[bytes, bytes]:
        be = m.copy_out_response() + b"".join(m.copy_data(b"%d\n" % i) for i in range(n))
        return m.query("copy t to stdout"), be + m.copy_done() + m.command_complete(f"COPY {n}") \
            + m.ready_for_query("I")

    def noise(t: str) -> tuple[bytes, bytes]:
        fe, be = _select("select 1", 1)
        return fe, m.notice_response({"S": "NOTICE", "M": t}) + \
            m.parameter_status("application_name", t) + be

    small = st.integers(0, 5)
    block = st.one_of(
        st.builds(simple, text, small), st.builds(multi, text, st.booleans()),
        st.builds(extended, text, small, st.booleans()), st.builds(prepared, small),
        st.builds(copy_in, small), st.builds(copy_out, small), st.builds(noise, text),
        st.just((m.query(""), m.empty_query_response() + m.ready_for_query("I"))),
    )
    return st.lists(block, min_size=1, max_size=6)


def conversation(round_trips: list[tuple[bytes, bytes]]) -> list[tuple[int, bytes]]:
    chunks = list(STARTUP)
    for fe, be in round_trips:
        chunks += [(F, fe), (B, be)]
    return chunks + [(F, m.terminate())]


def cut_chunks(chunks: list[tuple[int, bytes]], cuts: list[int]) -> list[tuple[int, bytes]]:
    """Re-cut each chunk at the given relative points (order and directions kept)."""
    out = []
    for i, (d, c) in enumerate(chunks):
        points = sorted({cuts[(i + j) % len(cuts)] % (len(c) + 1) for j in range(3)}
                        | {0, len(c)})
        out += [(d, c[a:b]) for a, b in zip(points, points[1:], strict=False) if b > a]
    return out


def feed_all(conn: Connection, chunks: list[tuple[int, bytes]], pos: list[int] | None = None,
             ts: int = 0) -> list[int]:
    pos = pos or [0, 0]
    for d, c in chunks:
        ts += 1
        conn.feed(d, pos[d], c, ts)
        pos[d] += len(c)
    return pos


# =============================================================================================


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([F, B]), st.binary(max_size=300)), max_size=30),
       st.booleans(), st.booleans())
def test_random_bytes_never_escape(chunks: list[tuple[int, bytes]], mid: bool, tls: bool) -> None:
    conn = Connection(mid_session=mid, tls_visible=tls, capture_params=True)
    feed_all(conn, chunks)
    conn.close(10**6)
    recs = conn.take_records()
    assert conn.decode_errors == 0
    assert all(r is not None for r in recs)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([F, B]), st.integers(-50, 400), st.binary(max_size=200)),
                max_size=40))
def test_random_positions_gaps_and_overlaps(chunks: list[tuple[int, int, bytes]]) -> None:
    conn = Connection()
    pos = [0, 0]
    for ts, (d, jump, c) in enumerate(chunks):
        pos[d] = max(0, pos[d] + jump)
        conn.feed(d, pos[d], c, ts)
        pos[d] += len(c)
    conn.close(10**6)
    conn.take_records()
    assert conn.decode_errors == 0


@FUZZ
@given(blocks(), st.lists(st.integers(0, 10**6), min_size=1, max_size=8))
def test_valid_sessions_in_random_chunkings(round_trips: list[tuple[bytes, bytes]],
                                            cuts: list[int]) -> None:
    chunks = conversation(round_trips)
    expected = comparable(replay(chunks))
    conn = Connection()
    got = comparable(replay(cut_chunks(chunks, cuts), conn=conn))
    assert got == expected
    assert conn.decode_errors == 0
    assert expected[-1].reason == "terminate"


def _same(a: Statement, b: Statement) -> bool:
    return (a.text, a.command_tag, a.rows, a.sqlstate, a.protocol) == \
        (b.text, b.command_tag, b.rows, b.sqlstate, b.protocol)


def check_truncated_run(chunks: list[tuple[int, bytes]], stop: int) -> None:
    """Feed the conversation's bytes up to the `stop`-th byte (in chunk order), then close."""
    full = statements(replay(chunks))
    part: list[tuple[int, bytes]] = []
    left = stop
    for d, c in chunks:
        if left <= 0:
            break
        part.append((d, c[:left]))
        left -= len(c)
    conn = Connection()
    got = statements(replay(part, conn=conn))
    assert conn.decode_errors == 0
    assert len(got) <= len(full)
    for g, f in zip(got, full, strict=False):
        if g.flags & INCOMPLETE:
            assert g.text == f.text
        elif g.flags & SKIPPED and not f.flags & SKIPPED:
            # Skipped because the session ended after an earlier failure: same statement.
            assert g.text == f.text
        else:
            assert _same(g, f), (stop, g, f)


@FUZZ
@given(blocks(), st.integers(0, 10**6))
def test_valid_sessions_cut_anywhere(round_trips: list[tuple[bytes, bytes]], at: int) -> None:
    chunks = conversation(round_trips)
    check_truncated_run(chunks, at % (sum(len(c) for _, c in chunks) + 1))


def test_one_session_cut_at_every_offset() -> None:
    fe1, be1 = _select("select 1; select 'x;y'", 2)
    chunks = conversation([
        (m.query("select 1; select 2"), m.row_description(["a"]) + m.data_row([b"1"])
         + m.command_complete("SELECT 1") + m.row_description(["a"]) + m.data_row([b"2"])
         + m.command_complete("SELECT 1") + m.ready_for_query("I")),
        (m.parse("", "select $1") + m.bind("", "", [b"7"]) + m.describe("P") + m.execute()
         + m.sync(), m.parse_complete() + m.bind_complete() + m.row_description(["a"])
         + m.data_row([b"7"]) + m.command_complete("SELECT 1") + m.ready_for_query("I")),
        (m.query("copy t from stdin") + m.copy_data(b"1\n") + m.copy_done(),
         m.copy_in_response() + m.command_complete("COPY 1") + m.ready_for_query("I")),
        (m.query("bad"), m.error_response(sqlstate="42601", message_text="syntax")
         + m.ready_for_query("I")),
    ])
    total = sum(len(c) for _, c in chunks)
    for stop in range(total + 1):
        check_truncated_run(chunks, stop)


def _recover(round_trips: list[tuple[bytes, bytes]], garbage: list[tuple[int, bytes]],
             gap: bool) -> tuple[Connection, list[Statement], list[Statement]]:
    conn = Connection()
    pos = feed_all(conn, conversation(round_trips)[:-1])
    conn.take_records()
    if gap:
        pos = [pos[0] + 1000, pos[1] + 1000]
    pos = feed_all(conn, garbage, pos)
    after = [_select(f"select {i}", i % 3) for i in range(5)]
    ref = statements(replay(STARTUP + [c for fe, be in after for c in ((F, fe), (B, be))]))
    feed_all(conn, [c for fe, be in after for c in ((F, fe), (B, be))], pos)
    conn.close(10**7)
    return conn, statements(conn.take_records()), ref


@FUZZ
@given(blocks(), st.lists(st.tuples(st.sampled_from([F, B]), st.binary(min_size=1,
                                                                        max_size=200)),
                          min_size=1, max_size=6),
       st.booleans())
def test_same_connection_recovers_after_garbage(round_trips: list[tuple[bytes, bytes]],
                                                garbage: list[tuple[int, bytes]],
                                                gap: bool) -> None:
    """Valid traffic, then garbage that desynchronises (malformed where it starts, or after a
    lost span), then valid traffic: after resync the traffic decodes exactly as on a fresh
    connection, from the third round trip on (the first ones may be flagged truncated or
    unknown while both sides resynchronise)."""
    if not gap:
        garbage = [(d, b"\xff" + g) for d, g in garbage]  # 0xff is no message type
    conn, got, ref = _recover(round_trips, garbage, gap)
    assert conn.decode_errors == 0
    tail_got = [(s.text, s.command_tag, s.rows, s.flags) for s in got[-3:]]
    tail_ref = [(s.text, s.command_tag, s.rows, s.flags) for s in ref[-3:]]
    assert tail_got == tail_ref


@FUZZ
@given(blocks(), st.lists(st.tuples(st.sampled_from([F, B]), st.binary(min_size=1,
                                                                        max_size=200)),
                          min_size=1, max_size=6))
def test_plausible_garbage_in_place_never_breaks_decoding(
        round_trips: list[tuple[bytes, bytes]], garbage: list[tuple[int, bytes]]) -> None:
    """Garbage that parses as the start of real messages, with no gap to warn: nothing can tell
    it from traffic (a client never sends it), but decoding must go on without error."""
    conn, got, _ = _recover(round_trips, garbage, False)
    assert conn.decode_errors == 0


@FUZZ
@given(blocks(), st.binary(min_size=1, max_size=500))
def test_a_new_connection_is_unaffected_by_another_ones_garbage(
        round_trips: list[tuple[bytes, bytes]], garbage: bytes) -> None:
    chunks = conversation(round_trips)
    expected = comparable(replay(chunks))
    bad = Connection()
    feed_all(bad, [(F, garbage), (B, garbage)])
    bad.close(1)
    assert comparable(replay(chunks)) == expected


@FUZZ
@given(blocks(), st.integers(0, 10**6), st.integers(1, 3000), st.sampled_from([F, B]))
def test_gap_anywhere_never_breaks_decoding(round_trips: list[tuple[bytes, bytes]], where: int,
                                            size: int, direction: int) -> None:
    """Lose `size` bytes of one direction anywhere: decoding goes on, gaps are reported."""
    chunks = conversation(round_trips)
    stream_len = sum(len(c) for d, c in chunks if d == direction)
    start = where % max(1, stream_len)
    conn = Connection()
    pos = [0, 0]
    seen_gap = False
    for ts, (d, c) in enumerate(chunks, 1):
        if d == direction and pos[d] <= start + size and start < pos[d] + len(c):
            lo = max(0, start - pos[d])
            hi = min(len(c), start + size - pos[d])
            if lo > 0:
                conn.feed(d, pos[d], c[:lo], ts)
            if hi < len(c):
                conn.feed(d, pos[d] + hi, c[hi:], ts)
            seen_gap = seen_gap or hi > lo
        else:
            conn.feed(d, pos[d], c, ts)
        pos[d] += len(c)
    conn.close(10**6)
    recs: list[Any] = conn.take_records()
    assert conn.decode_errors == 0
    if seen_gap and start + size < stream_len:
        assert any(getattr(r, "reason", None) == "dropped" for r in recs)

"""pgwire decoder: golden message tests and per-connection state machine tests on exact byte
streams (no server needed). Byte layouts: PostgreSQL docs, protocol-message-formats."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from agent.pgwire import encode as m
from agent.pgwire import messages as msg
from agent.pgwire.codes import BackendType, FrontendType, StartupCode, TransactionStatus
from agent.pgwire.decoder import (
    MESSAGE_CAP,
    StreamDecoder,
    backend_chain_ends_ready,
    find_ready_for_query,
    frontend_chain,
)
from agent.pgwire.records import FLAG_NAMES, flag_names
from agent.pgwire.session import (
    BACKEND,
    FRONTEND,
    INCOMPLETE,
    SKIPPED,
    TRUNCATED,
    UNKNOWN_STATEMENT,
    Authenticated,
    CancelInfo,
    Connection,
    Gap,
    SessionEnd,
    StartupInfo,
    Statement,
)
from tests.pgwire_relay import bytewise, comparable, merged, rechunk, replay, statements

F, B = FRONTEND, BACKEND

STARTUP = [
    (F, m.startup_message({"user": "alice", "database": "shop", "application_name": "unit",
                           "client_encoding": "UTF8"})),
    (B, m.authentication_ok() + m.parameter_status("server_version", "15.8")
     + m.parameter_status("client_encoding", "UTF8") + m.backend_key_data(4242, 99)
     + m.ready_for_query("I")),
]


def select_response(*rows: bytes, tag: str | None = None, status: str = "I") -> bytes:
    out = m.row_description(["x"]) + b"".join(m.data_row([r]) for r in rows)
    return out + m.command_complete(tag or f"SELECT {len(rows)}") + m.ready_for_query(status)


def only(records: list, cls: type) -> list:
    return [r for r in records if isinstance(r, cls)]


# =============================================================================================
# codes


def test_type_bytes_match_the_protocol_docs() -> None:
    assert FrontendType.Query == ord("Q") and BackendType.DataRow == ord("D")
    assert FrontendType.Describe == ord("D")  # same byte, other direction, other message
    assert FrontendType.SASLInitialResponse is FrontendType.PasswordMessage
    assert FrontendType.GSSResponse is FrontendType.PasswordMessage
    assert StartupCode.SSLRequest == 80877103 and StartupCode.GSSENCRequest == 80877104
    assert StartupCode.CancelRequest == 80877102
    assert TransactionStatus.Failed == ord("E")
    expected_backend = {
        "Authentication": "R", "BackendKeyData": "K", "BindComplete": "2", "CloseComplete": "3",
        "CommandComplete": "C", "CopyInResponse": "G", "CopyOutResponse": "H",
        "CopyBothResponse": "W", "CopyData": "d", "CopyDone": "c", "DataRow": "D",
        "EmptyQueryResponse": "I", "ErrorResponse": "E", "FunctionCallResponse": "V",
        "NegotiateProtocolVersion": "v", "NoData": "n", "NoticeResponse": "N",
        "NotificationResponse": "A", "ParameterDescription": "t", "ParameterStatus": "S",
        "ParseComplete": "1", "PortalSuspended": "s", "ReadyForQuery": "Z", "RowDescription": "T"}
    assert {t.name: chr(t.value) for t in BackendType} == expected_backend


# =============================================================================================
# messages: golden bytes (literal, not produced by our encoder)

GOLDEN_FRONTEND = [
    (b"Q\x00\x00\x00\x0dselect 1\x00", msg.Query("select 1")),
    (b"P\x00\x00\x00\x17s1\x00select $1\x00\x00\x01\x00\x00\x00\x17",
     msg.Parse("s1", "select $1", (23,))),
    (b"B\x00\x00\x00\x17p\x00s1\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x02\x00\x2a\x00\x00",
     msg.Bind("p", "s1", (1,), 1, (b"\x00*",), ())),
    (b"D\x00\x00\x00\x06P\x00", msg.Describe("P", "")),
    (b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00", msg.Execute("", 0)),
    (b"S\x00\x00\x00\x04", msg.Sync()),
    (b"H\x00\x00\x00\x04", msg.Flush()),
    (b"C\x00\x00\x00\x08Ss1\x00", msg.Close("S", "s1")),
    (b"X\x00\x00\x00\x04", msg.Terminate()),
    (b"d\x00\x00\x00\x081\tx\n", msg.CopyData(4)),
    (b"c\x00\x00\x00\x04", msg.CopyDone()),
    (b"f\x00\x00\x00\x09oops\x00", msg.CopyFail("oops")),
    (b"p\x00\x00\x00\x0chunter2\x00", msg.PasswordMessage(8)),
]

GOLDEN_BACKEND = [
    (b"R\x00\x00\x00\x08\x00\x00\x00\x00", msg.AuthenticationOk()),
    (b"R\x00\x00\x00\x0c\x00\x00\x00\x05salt", msg.AuthenticationMD5Password()),
    (b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00",
     msg.AuthenticationSASL(("SCRAM-SHA-256",))),
    (b"R\x00\x00\x00\x0c\x00\x00\x00\x0br=ab", msg.AuthenticationSASLContinue(4)),
    (b"K\x00\x00\x00\x0c\x00\x00\x10\x92\x12\x34\x56\x78", msg.BackendKeyData(4242, 4)),
    (b"S\x00\x00\x00\x19client_encoding\x00UTF8\x00",
     msg.ParameterStatus("client_encoding", "UTF8")),
    (b"Z\x00\x00\x00\x05T", msg.ReadyForQuery("T")),
    (b"C\x00\x00\x00\x0fINSERT 0 5\x00", msg.CommandComplete("INSERT 0 5")),
    (b"1\x00\x00\x00\x04", msg.ParseComplete()),
    (b"2\x00\x00\x00\x04", msg.BindComplete()),
    (b"3\x00\x00\x00\x04", msg.CloseComplete()),
    (b"n\x00\x00\x00\x04", msg.NoData()),
    (b"I\x00\x00\x00\x04", msg.EmptyQueryResponse()),
    (b"s\x00\x00\x00\x04", msg.PortalSuspended()),
    (b"t\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x17", msg.ParameterDescription((23,))),
    (b"D\x00\x00\x00\x0f\x00\x02\x00\x00\x00\x01x\xff\xff\xff\xff",
     msg.DataRow(2, 11)),
    (b"G\x00\x00\x00\x0b\x00\x00\x02\x00\x00\x00\x00", msg.CopyInResponse(0, (0, 0))),
    (b"H\x00\x00\x00\x07\x01\x00\x00", msg.CopyOutResponse(1, ())),
    (b"W\x00\x00\x00\x07\x00\x00\x00", msg.CopyBothResponse(0, ())),
    (b"V\x00\x00\x00\x0a\x00\x00\x00\x02ok", msg.FunctionCallResponse(2)),
    (b"v\x00\x00\x00\x15\x00\x00\x00\x00\x00\x00\x00\x01_pq_.foo\x00",
     msg.NegotiateProtocolVersion(0, ("_pq_.foo",))),
    (b"A\x00\x00\x00\x14\x00\x00\x00\x07chan\x00secret\x00",
     msg.NotificationResponse(7, "chan", 6)),
]


@pytest.mark.parametrize(("raw", "expected"), GOLDEN_FRONTEND,
                         ids=[type(e).__name__ for _, e in GOLDEN_FRONTEND])
def test_frontend_golden(raw: bytes, expected: object) -> None:
    length = struct.unpack(">i", raw[1:5])[0]
    assert length == len(raw) - 1
    got = msg.parse_frontend(raw[0], raw[5:], with_values=True)
    assert got == expected
    assert StreamDecoder(frontend=True, startup=False).feed(raw) == [expected]


@pytest.mark.parametrize(("raw", "expected"), GOLDEN_BACKEND,
                         ids=[type(e).__name__ for _, e in GOLDEN_BACKEND])
def test_backend_golden(raw: bytes, expected: object) -> None:
    assert struct.unpack(">i", raw[1:5])[0] == len(raw) - 1
    assert msg.parse_backend(raw[0], raw[5:]) == expected


def test_startup_packets_golden() -> None:
    ssl = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
    gss = b"\x00\x00\x00\x08\x04\xd2\x16\x30"
    cancel = b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x10\x92\x12\x34\x56\x78"
    startup = (b"\x00\x00\x00\x1e\x00\x03\x00\x00user\x00bob\x00database\x00db\x00\x00")
    assert struct.unpack(">i", startup[:4])[0] == len(startup)
    assert msg.parse_startup(ssl[4:]) == msg.SSLRequest()
    assert msg.parse_startup(gss[4:]) == msg.GSSENCRequest()
    c = msg.parse_startup(cancel[4:])
    assert c == msg.CancelRequest(4242, 4) and "305419896" not in repr(c)  # key not kept
    s = msg.parse_startup(startup[4:])
    assert s == msg.StartupMessage(196608, {"user": "bob", "database": "db"})
    dec = StreamDecoder(frontend=True)
    assert dec.feed(ssl + startup[:7]) == [msg.SSLRequest()]
    assert dec.feed(startup[7:] + b"Q\x00\x00\x00\x05\x00") == [s, msg.Query("")]


def test_error_fields_are_read_by_code_not_order() -> None:
    fields = {"M": "duplicate key value violates unique constraint \"t_pkey\"", "n": "t_pkey",
              "D": "Key (id)=(42) already exists.", "t": "t", "C": "23505", "s": "public",
              "S": "ERREUR", "V": "ERROR", "F": "nbtinsert.c", "L": "664", "R": "_bt_check"}
    e = msg.parse_backend(ord("E"), m.error_response(fields)[5:])
    assert isinstance(e, msg.ErrorResponse)
    assert (e.severity, e.sqlstate, e.constraint, e.schema, e.table, e.line) == \
        ("ERROR", "23505", "t_pkey", "public", "t", 664)
    # Servers before 9.6 send no V: fall back to S.
    old = msg.parse_backend(ord("N"), m.notice_response({"C": "01000", "S": "WARNING",
                                                         "M": "hi"})[5:])
    assert isinstance(old, msg.NoticeResponse) and old.severity == "WARNING"


def test_secrets_never_kept_in_message_model() -> None:
    p = msg.parse_frontend(ord("p"), b"SCRAM-SHA-256\x00\x00\x00\x00\x20n,,n=,r=secretnonce")
    assert p == msg.PasswordMessage(37) and "secret" not in repr(p)
    assert not any(f.name not in ("length",) for f in dataclasses.fields(p))
    d = msg.parse_backend(ord("D"), m.data_row([b"4111111111111111"])[5:])
    assert "4111" not in repr(d)
    n = msg.parse_backend(ord("A"), m.notification_response(1, "c", "ssn=123")[5:])
    assert "ssn" not in repr(n)


def test_command_tag_rows() -> None:
    assert msg.split_command_tag("INSERT 0 5") == ("INSERT", 5)
    assert msg.split_command_tag("SELECT 12") == ("SELECT", 12)
    for cmd in ("UPDATE", "DELETE", "MERGE", "MOVE", "FETCH", "COPY"):
        assert msg.split_command_tag(f"{cmd} 3") == (cmd, 3)
    assert msg.split_command_tag("CREATE TABLE") == ("CREATE TABLE", None)
    assert msg.split_command_tag("BEGIN") == ("BEGIN", None)
    assert msg.CommandComplete("UPDATE 7").rows == 7


@pytest.mark.parametrize("raw", [b"", b"\x00\x01", b"abc"])
def test_malformed_bodies_raise_protocol_error(raw: bytes) -> None:
    for t in (ord("B"), ord("P"), ord("E"), ord("D")):
        with pytest.raises(msg.ProtocolError):
            msg.parse_frontend(t, raw)
    with pytest.raises(msg.ProtocolError):
        msg.parse_backend(ord("T"), raw + b"\xff\xff")


def test_framing_helpers() -> None:
    chunk = m.parse("", "select 1") + m.bind("", "") + m.execute() + m.sync()
    assert frontend_chain(chunk, 0, len(chunk))
    assert not frontend_chain(chunk, 1, len(chunk))
    assert not frontend_chain(b"Q\x00\x00\x00\x09abcde", 0, 10)  # no NUL at the end
    big = m.query("x" * 20000)
    assert frontend_chain(m.sync() + m.sync() + big[:8192 - 10], 0, 8192)  # cut last message
    resp = select_response(b"1")
    assert backend_chain_ends_ready(resp, 0, len(resp))
    assert not backend_chain_ends_ready(resp, 0, len(resp) - 1)
    assert find_ready_for_query(b"xxZ\x00\x00\x00\x05Q" + m.ready_for_query("E"), 0, 20) == 8
    assert find_ready_for_query(b"Z\x00\x00\x00\x05", 0, 5) == -1


# =============================================================================================
# session: startup, authentication, end


def test_startup_and_clean_terminate() -> None:
    recs = replay(STARTUP + [(F, m.terminate())])
    assert isinstance(recs[0], StartupInfo)
    assert recs[0].params == {"user": "alice", "database": "shop", "application_name": "unit",
                              "client_encoding": "UTF8"}
    assert recs[0].protocol_version == "3.0" and not recs[0].tls
    assert isinstance(recs[1], Authenticated)
    assert isinstance(recs[-1], SessionEnd) and recs[-1].reason == "terminate"
    assert len(recs) == 3


def test_backend_pid_and_parameter_status() -> None:
    conn = Connection()
    replay(STARTUP, conn=conn, close=False)
    assert conn.backend_pid == 4242
    assert conn.server_params["server_version"] == "15.8"


def test_failed_login_is_a_session_end_with_the_error() -> None:
    recs = replay([(F, m.startup_message({"user": "x", "database": "nope"})),
                   (B, m.error_response({"S": "FATAL", "V": "FATAL", "C": "3D000",
                                         "M": 'database "nope" does not exist'}))])
    ends = only(recs, SessionEnd)
    assert len(ends) == 1
    assert (ends[0].reason, ends[0].sqlstate) == ("error", "3D000")
    assert not statements(recs)


def test_password_never_reaches_records_or_state() -> None:
    secret = "correct horse battery staple"
    conn = Connection()
    chunks = [(F, m.startup_message({"user": "u", "database": "d"})),
              (B, m.authentication(3)),  # AuthenticationCleartextPassword
              (F, m.password_message(secret.encode() + b"\0")),
              (B, m.authentication_ok() + m.ready_for_query("I")),
              (F, m.query("select 1")), (B, select_response(b"1"))]
    recs = replay(chunks, conn=conn)
    blob = repr(recs) + repr({s: getattr(conn, s, None) for s in Connection.__slots__})
    assert secret not in blob and "horse" not in blob


def test_disconnect_without_terminate_flushes_incomplete() -> None:
    recs = replay(STARTUP + [(F, m.query("select pg_sleep(100)"))])
    st = statements(recs)
    assert len(st) == 1 and st[0].flags == INCOMPLETE and st[0].txn_status is None
    assert recs[-1].reason == "disconnect"


def test_fatal_during_query_ends_session() -> None:
    recs = replay(STARTUP + [(F, m.query("select pg_sleep(100)")),
                             (B, m.error_response({"S": "FATAL", "V": "FATAL", "C": "57P01",
                                                   "M": "terminating connection due to "
                                                        "administrator command"}))])
    st = statements(recs)
    assert st[0].sqlstate == "57P01" and st[0].error_severity == "FATAL"
    assert isinstance(recs[-1], SessionEnd) and recs[-1].reason == "error"
    assert recs[-1].sqlstate == "57P01"


def test_cancel_request() -> None:
    recs = replay([(F, m.cancel_request(4242, 7))])
    assert recs == [CancelInfo(1, 4242)]


def test_ssl_request_above_tls() -> None:
    recs = replay([(F, m.ssl_request()), *STARTUP, (F, m.query("select 1")),
                   (B, select_response(b"1"))])
    info = only(recs, StartupInfo)[0]
    assert info.tls and not info.gssenc
    assert statements(recs)[0].rows == 1


def test_ssl_request_syscall_capture_accepted_goes_encrypted() -> None:
    recs = replay([(F, m.ssl_request()), (B, b"S"), (F, b"\x16\x03\x01\x02\x00" + b"\x01" * 64),
                   (B, b"\x16\x03\x03\x00\x7a" + b"\x02" * 60), (F, b"\x17\x03\x03garbage")],
                  tls_visible=False)
    gaps = only(recs, Gap)
    assert [g.reason for g in gaps] == ["encrypted"]
    assert not only(recs, StartupInfo) and not statements(recs)


def test_ssl_request_syscall_capture_refused_stays_plaintext() -> None:
    recs = replay([(F, m.ssl_request()), (B, b"N"), *STARTUP, (F, m.query("select 1")),
                   (B, select_response(b"1"))], tls_visible=False)
    assert only(recs, StartupInfo)[0].tls  # asked; the answer was N
    assert statements(recs)[0].command_tag == "SELECT"
    assert not only(recs, Gap)


def test_gssenc_request() -> None:
    recs = replay([(F, m.gssenc_request()), *STARTUP])
    assert only(recs, StartupInfo)[0].gssenc
    recs = replay([(F, m.gssenc_request()), (B, b"G"), (F, b"\x60\x82garbage")],
                  tls_visible=False)
    assert [g.reason for g in only(recs, Gap)] == ["encrypted"]


# =============================================================================================
# session: simple protocol


def test_simple_query_tags_rows_and_txn_status() -> None:
    chunks = STARTUP + [
        (F, m.query("BEGIN")), (B, m.command_complete("BEGIN") + m.ready_for_query("T")),
        (F, m.query("insert into t select generate_series(1,5)")),
        (B, m.command_complete("INSERT 0 5") + m.ready_for_query("T")),
        (F, m.query("select * from t")),
        (B, select_response(b"1", b"2", b"3", status="T")),
        (F, m.query("create table u (a int)")),
        (B, m.command_complete("CREATE TABLE") + m.ready_for_query("T")),
        (F, m.query("COMMIT")), (B, m.command_complete("COMMIT") + m.ready_for_query("I")),
    ]
    st = statements(replay(chunks))
    assert [(s.command_tag, s.rows, s.rows_sent, s.txn_status) for s in st] == [
        ("BEGIN", None, 0, "T"), ("INSERT", 5, 0, "T"), ("SELECT", 3, 3, "T"),
        ("CREATE TABLE", None, 0, "T"), ("COMMIT", None, 0, "I")]
    assert [s.seq for s in st] == [1, 2, 3, 4, 5]
    assert [s.query_seq for s in st] == [1, 2, 3, 4, 5]
    assert all(s.protocol == "simple" and s.flags == 0 for s in st)
    assert st[1].text == "insert into t select generate_series(1,5)"
    assert st[2].ts_start_ns == 7 and st[2].ts_end_ns == 8


def test_multi_statement_query_with_error_in_the_middle() -> None:
    sql = "insert into t values (1); select 1/0; update t set a = 2; select 3"
    err = m.error_response({"S": "ERROR", "V": "ERROR", "C": "22012",
                            "M": "division by zero"})
    chunks = STARTUP + [(F, m.query(sql)),
                        (B, m.command_complete("INSERT 0 1") + m.row_description(["?column?"])
                         + err + m.ready_for_query("I"))]
    st = statements(replay(chunks))
    assert [s.text for s in st] == ["insert into t values (1)", "select 1/0",
                                    "update t set a = 2", "select 3"]
    assert [(s.command_tag, s.sqlstate, s.flags) for s in st] == [
        ("INSERT", None, 0), (None, "22012", 0), (None, None, SKIPPED), (None, None, SKIPPED)]
    assert {s.query_seq for s in st} == {1} and {s.txn_status for s in st} == {"I"}
    assert st[1].error_message == "division by zero"


def test_multi_statement_syntax_error_is_one_refused_statement() -> None:
    sql = "select 1; selec 2; select 3"  # the server's parser refuses the whole string
    err = m.error_response({"S": "ERROR", "V": "ERROR", "C": "42601", "P": "11",
                            "M": 'syntax error at or near "selec"'})
    st = statements(replay(STARTUP + [(F, m.query(sql)), (B, err + m.ready_for_query("I"))]))
    assert len(st) == 1 and st[0].text == sql and st[0].sqlstate == "42601"


def test_multi_statement_refused_by_server_grammar_but_split_by_pglast() -> None:
    # pglast (newer grammar) splits it, PostgreSQL 15 refuses the whole string at parse time.
    sql = "select 1; select json_scalar(1)"
    err = m.error_response({"S": "ERROR", "V": "ERROR", "C": "42601", "P": "24",
                            "M": "syntax error"})
    st = statements(replay(STARTUP + [(F, m.query(sql)), (B, err + m.ready_for_query("I"))]))
    assert len(st) == 1 and st[0].text == sql and st[0].flags == 0


def test_split_count_disagreeing_with_responses_falls_back_to_whole_text() -> None:
    sql = "select 1; select 2"
    chunks = STARTUP + [(F, m.query(sql)),
                        (B, m.command_complete("SELECT 1") + m.command_complete("SELECT 1")
                         + m.command_complete("SELECT 1") + m.ready_for_query("I"))]
    st = statements(replay(chunks))
    assert len(st) == 3 and all(s.text == sql for s in st)
    chunks = STARTUP + [(F, m.query(sql)),
                        (B, m.command_complete("SELECT 1") + m.ready_for_query("I"))]
    st = statements(replay(chunks))
    assert len(st) == 1 and st[0].text == sql and st[0].flags == 0


def test_empty_query() -> None:
    st = statements(replay(STARTUP + [(F, m.query("")),
                                      (B, m.empty_query_response() + m.ready_for_query("I"))]))
    assert len(st) == 1 and st[0].command_tag is None and st[0].sqlstate is None
    assert st[0].ts_end_ns is not None and st[0].flags == 0


def test_deferred_constraint_error_at_commit_belongs_to_last_statement() -> None:
    err = m.error_response({"S": "ERROR", "V": "ERROR", "C": "23503", "n": "fk_x",
                            "s": "public", "t": "child", "M": "violates foreign key",
                            "D": "Key (parent)=(secret-42) is not present"})
    st = statements(replay(STARTUP + [(F, m.query("insert into child values (1)")),
                                      (B, m.command_complete("INSERT 0 1") + err
                                       + m.ready_for_query("I"))]))
    assert len(st) == 1
    s = st[0]
    assert (s.command_tag, s.rows, s.sqlstate, s.error_constraint, s.error_schema,
            s.error_table, s.error_phase) == ("INSERT", 1, "23503", "fk_x", "public", "child",
                                              "commit")
    assert "secret-42" not in repr(s)  # the detail field is never copied


def test_notices_notifications_and_parameter_status_between_results() -> None:
    chunks = STARTUP + [(F, m.query("set client_encoding to 'LATIN1'; select 1")),
                        (B, m.notice_response({"S": "NOTICE", "C": "00000", "M": "hi"})
                         + m.command_complete("SET")
                         + m.parameter_status("client_encoding", "LATIN1")
                         + m.notification_response(1, "c", "p")
                         + select_response(b"1"))]
    conn = Connection()
    st = statements(replay(chunks, conn=conn, close=False))
    assert [s.command_tag for s in st] == ["SET", "SELECT"]
    # Later texts are decoded as LATIN1.
    conn.feed(F, sum(len(c) for d, c in chunks if d == F), m.query("select 'caf\xe9'".encode(
        "latin-1")), 99)
    conn.feed(B, sum(len(c) for d, c in chunks if d == B), select_response(b"x"), 100)
    assert statements(conn.take_records())[0].text == "select 'café'"


def test_copy_from_stdin_simple() -> None:
    chunks = STARTUP + [(F, m.query("copy t from stdin")), (B, m.copy_in_response((0, 0))),
                        (F, m.copy_data(b"1\tsecret-a\n") + m.copy_data(b"2\tsecret-b\n")),
                        (F, m.copy_done()),
                        (B, m.command_complete("COPY 2") + m.ready_for_query("I"))]
    st = statements(replay(chunks))
    assert [(s.command_tag, s.rows) for s in st] == [("COPY", 2)]
    assert "secret" not in repr(st)


def test_copy_fail() -> None:
    chunks = STARTUP + [(F, m.query("copy t from stdin")), (B, m.copy_in_response()),
                        (F, m.copy_data(b"1\n") + m.copy_fail("client gave up")),
                        (B, m.error_response(sqlstate="57014", message_text="COPY from stdin "
                                                                            "failed")
                         + m.ready_for_query("I"))]
    st = statements(replay(chunks))
    assert st[0].sqlstate == "57014"


def test_copy_to_stdout() -> None:
    out = m.copy_out_response((0,)) + b"".join(m.copy_data(b"%d\n" % i) for i in range(100))
    chunks = STARTUP + [(F, m.query("copy t to stdout")),
                        (B, out + m.copy_done() + m.command_complete("COPY 100")
                         + m.ready_for_query("I"))]
    st = statements(replay(chunks))
    assert (st[0].command_tag, st[0].rows) == ("COPY", 100)


def test_copy_both_replication_stream_is_skipped() -> None:
    chunks = STARTUP + [(F, m.query("START_REPLICATION SLOT s LOGICAL 0/0")),
                        (B, m.copy_both_response() + m.copy_data(b"w" + b"\0" * 100)),
                        (F, m.copy_data(b"r" + b"\0" * 33)),
                        (B, m.copy_data(b"k" + b"\0" * 17))]
    recs = replay(chunks)
    st = statements(recs)
    assert len(st) == 1 and st[0].flags == INCOMPLETE
    assert not only(recs, Gap)


# =============================================================================================
# session: extended protocol


def test_extended_unnamed_with_params() -> None:
    chunks = STARTUP + [
        (F, m.parse("", "select $1::int + $2") + m.bind("", "", [b"40", b"\x00\x00\x00\x02"],
                                                        formats=[0, 1])
         + m.describe("P") + m.execute() + m.sync()),
        (B, m.parse_complete() + m.bind_complete() + select_response(b"42")),
    ]
    for capture in (False, True):
        st = statements(replay(chunks, capture_params=capture))
        assert len(st) == 1
        s = st[0]
        assert (s.protocol, s.text, s.statement_name, s.portal) == \
            ("extended", "select $1::int + $2", "", "")
        assert (s.param_count, s.param_formats, s.command_tag, s.rows) == (2, (0, 1), "SELECT", 1)
        assert s.param_values == (("40", "00000002") if capture else None)


def test_prepared_statement_reused_and_closed() -> None:
    chunks = STARTUP + [
        (F, m.parse("s1", "select * from t where id = $1", [23]) + m.describe("S", "s1")
         + m.sync()),
        (B, m.parse_complete() + m.parameter_description([23]) + m.row_description(["id"])
         + m.ready_for_query("I")),
        (F, m.bind("", "s1", [b"1"]) + m.execute() + m.sync()),
        (B, m.bind_complete() + m.data_row([b"1"]) + m.command_complete("SELECT 1")
         + m.ready_for_query("I")),
        (F, m.bind("", "s1", [None]) + m.execute() + m.sync()),
        (B, m.bind_complete() + m.command_complete("SELECT 0") + m.ready_for_query("I")),
        (F, m.close("S", "s1") + m.sync()), (B, m.close_complete() + m.ready_for_query("I")),
        (F, m.bind("", "s1", [b"1"]) + m.execute() + m.sync()),
        (B, m.error_response(sqlstate="26000", message_text='prepared statement "s1" does '
                                                            'not exist')
         + m.ready_for_query("I")),
    ]
    st = statements(replay(chunks, capture_params=True))
    assert [(s.text, s.statement_name, s.rows, s.sqlstate, s.flags) for s in st] == [
        ("select * from t where id = $1", "s1", 1, None, 0),
        ("select * from t where id = $1", "s1", 0, None, 0),
        (None, "s1", None, "26000", UNKNOWN_STATEMENT),
    ]
    assert st[1].param_values == (None,)
    assert [s.query_seq for s in st] == [2, 3, 5]


def test_pipelined_batches_before_any_response() -> None:
    fe = b""
    be = b""
    for i in range(3):
        fe += m.parse(f"q{i}", f"select {i}") + m.bind(f"p{i}", f"q{i}") + m.execute(f"p{i}")
    fe += m.sync()
    be += (m.parse_complete() + m.bind_complete() + m.data_row([b"x"])
           + m.command_complete("SELECT 1")) * 3 + m.ready_for_query("I")
    fe += m.parse("", "update t set a = 1") + m.bind("", "") + m.execute() + m.sync()
    be += m.parse_complete() + m.bind_complete() + m.command_complete("UPDATE 7") \
        + m.ready_for_query("I")
    st = statements(replay(STARTUP + [(F, fe), (B, be)]))
    assert [(s.text, s.portal, s.query_seq, s.command_tag, s.rows) for s in st] == [
        ("select 0", "p0", 1, "SELECT", 1), ("select 1", "p1", 1, "SELECT", 1),
        ("select 2", "p2", 1, "SELECT", 1), ("update t set a = 1", "", 2, "UPDATE", 7)]


def test_error_in_pipeline_skips_until_sync() -> None:
    fe = (m.parse("", "insert into t values (1)") + m.bind("", "") + m.execute()
          + m.parse("", "insert into t values (1)") + m.bind("", "") + m.execute()
          + m.parse("", "select 3") + m.bind("", "") + m.execute() + m.sync()
          + m.parse("", "select 4") + m.bind("", "") + m.execute() + m.sync())
    be = (m.parse_complete() + m.bind_complete() + m.command_complete("INSERT 0 1")
          + m.parse_complete() + m.bind_complete()
          + m.error_response({"S": "ERROR", "V": "ERROR", "C": "23505", "n": "t_pkey",
                              "M": "duplicate key"})
          + m.ready_for_query("I")
          + m.parse_complete() + m.bind_complete() + m.data_row([b"4"])
          + m.command_complete("SELECT 1") + m.ready_for_query("I"))
    st = statements(replay(STARTUP + [(F, fe), (B, be)]))
    assert [(s.text, s.command_tag, s.sqlstate, s.flags) for s in st] == [
        ("insert into t values (1)", "INSERT", None, 0),
        ("insert into t values (1)", None, "23505", 0),
        ("select 3", None, None, SKIPPED),
        ("select 4", "SELECT", None, 0)]
    assert st[1].error_constraint == "t_pkey"
    assert [s.query_seq for s in st] == [1, 1, 1, 2]


def test_parse_error_goes_to_its_execute_and_rolls_back_the_statement_map() -> None:
    conn = Connection()
    fe = (m.parse("s1", "selec 1") + m.bind("", "s1") + m.describe("P") + m.execute()
          + m.parse("", "select 2") + m.bind("", "") + m.execute() + m.sync())
    be = (m.error_response({"S": "ERROR", "V": "ERROR", "C": "42601", "P": "1",
                            "M": 'syntax error at or near "selec"'}) + m.ready_for_query("I"))
    st = statements(replay(STARTUP + [(F, fe), (B, be)], conn=conn, close=False))
    assert [(s.text, s.sqlstate, s.flags, s.error_phase) for s in st] == [
        ("selec 1", "42601", 0, "parse"), ("select 2", None, SKIPPED, None)]
    assert "s1" not in conn.statement_map  # the server never created it


def test_refused_parse_without_execute_is_reported() -> None:
    fe = m.parse("s1", "selec 1") + m.describe("S", "s1") + m.sync()
    be = m.error_response(sqlstate="42601", message_text="syntax error") + m.ready_for_query("I")
    st = statements(replay(STARTUP + [(F, fe), (B, be)]))
    assert [(s.text, s.statement_name, s.sqlstate, s.error_phase) for s in st] == [
        ("selec 1", "s1", "42601", "parse")]


def test_duplicate_prepared_statement_keeps_the_old_text() -> None:
    conn = Connection()
    chunks = STARTUP + [
        (F, m.parse("s", "select 'old'") + m.sync()),
        (B, m.parse_complete() + m.ready_for_query("I")),
        (F, m.parse("s", "select 'new'") + m.sync()),
        (B, m.error_response(sqlstate="42P05", message_text='prepared statement "s" already '
                                                            'exists') + m.ready_for_query("I")),
        (F, m.bind("", "s") + m.execute() + m.sync()),
        (B, m.bind_complete() + m.data_row([b"old"]) + m.command_complete("SELECT 1")
         + m.ready_for_query("I")),
    ]
    st = statements(replay(chunks, conn=conn))
    assert st[-1].text == "select 'old'"


def test_portal_suspended_and_fetch_more() -> None:
    chunks = STARTUP + [
        (F, m.query("begin")), (B, m.command_complete("BEGIN") + m.ready_for_query("T")),
        (F, m.parse("", "select generate_series(1, 5)") + m.bind("c1", "")
         + m.execute("c1", 2) + m.sync()),
        (B, m.parse_complete() + m.bind_complete() + m.data_row([b"1"]) + m.data_row([b"2"])
         + m.portal_suspended() + m.ready_for_query("T")),
        (F, m.execute("c1", 10) + m.sync()),
        (B, m.data_row([b"3"]) + m.data_row([b"4"]) + m.data_row([b"5"])
         + m.command_complete("SELECT 3") + m.ready_for_query("T")),
    ]
    st = statements(replay(chunks))[1:]
    assert [(s.portal, s.suspended, s.rows_sent, s.command_tag, s.rows) for s in st] == [
        ("c1", True, 2, None, None), ("c1", False, 3, "SELECT", 3)]
    assert st[0].text == st[1].text == "select generate_series(1, 5)"


def test_sql_prepare_execute_deallocate_and_discard_all() -> None:
    conn = Connection()
    chunks = STARTUP + [
        (F, m.query("PREPARE q1 (int) AS select $1 + 1")),
        (B, m.command_complete("PREPARE") + m.ready_for_query("I")),
        (F, m.bind("", "q1", [b"1"]) + m.execute() + m.sync()),
        (B, m.bind_complete() + m.data_row([b"2"]) + m.command_complete("SELECT 1")
         + m.ready_for_query("I")),
        (F, m.parse("q2", "select 2") + m.sync()), (B, m.parse_complete() + m.ready_for_query("I")),
        (F, m.query("DEALLOCATE q1")),
        (B, m.command_complete("DEALLOCATE") + m.ready_for_query("I")),
    ]
    st = statements(replay(chunks, conn=conn, close=False))
    assert st[1].text == "select $1 + 1" and st[1].flags == 0
    assert conn.statement_map == {"q2": "select 2"}
    fe_pos = sum(len(c) for d, c in chunks if d == F)
    be_pos = sum(len(c) for d, c in chunks if d == B)
    conn.feed(F, fe_pos, m.query("DISCARD ALL"), 50)
    conn.feed(B, be_pos, m.command_complete("DISCARD ALL") + m.ready_for_query("I"), 51)
    assert conn.statement_map == {}


def test_copy_from_stdin_extended_ignores_the_sync_sent_with_execute() -> None:
    chunks = STARTUP + [
        (F, m.parse("", "copy t from stdin") + m.bind("", "") + m.describe("P") + m.execute()
         + m.sync()),
        (B, m.parse_complete() + m.bind_complete() + m.no_data() + m.copy_in_response()),
        (F, m.copy_data(b"1\n") + m.copy_done() + m.sync()),
        (B, m.command_complete("COPY 1") + m.ready_for_query("I")),
        (F, m.query("select 1")), (B, select_response(b"1")),
    ]
    st = statements(replay(chunks))
    assert [(s.command_tag, s.rows, s.flags) for s in st] == [("COPY", 1, 0), ("SELECT", 1, 0)]


def test_function_call() -> None:
    chunks = STARTUP + [(F, m.function_call(1598, [b"\x00\x00\x00\x01"], [1])),
                        (B, m.function_call_response(b"ok") + m.ready_for_query("I"))]
    st = statements(replay(chunks))
    assert (st[0].protocol, st[0].function_oid, st[0].txn_status) == ("function_call", 1598, "I")


def test_flush_and_describe_statement() -> None:
    chunks = STARTUP + [
        (F, m.parse("s", "select $1") + m.describe("S", "s") + m.flush()),
        (B, m.parse_complete() + m.parameter_description([25]) + m.no_data()),
        (F, m.bind("", "s", [b"a"]) + m.execute() + m.sync()),
        (B, m.bind_complete() + m.data_row([b"a"]) + m.command_complete("SELECT 1")
         + m.ready_for_query("I")),
    ]
    st = statements(replay(chunks))
    assert [(s.text, s.rows) for s in st] == [("select $1", 1)]


# =============================================================================================
# chunking: split reads at every offset, many messages per read


def _session_for_chunking() -> list[tuple[int, bytes]]:
    return STARTUP + [
        (F, m.query("select 1; select 'a;b'")),
        (B, select_response(b"1", status="I")[:-6] + select_response(b"a;b")),
        (F, m.parse("", "select $1") + m.bind("", "", [b"x"]) + m.describe("P") + m.execute()
         + m.sync()),
        (B, m.parse_complete() + m.bind_complete() + select_response(b"x")),
        (F, m.query("copy t from stdin")), (B, m.copy_in_response()),
        (F, m.copy_data(b"1\n" * 50) + m.copy_done()),
        (B, m.command_complete("COPY 50") + m.ready_for_query("I")),
        (F, m.query("select bad")),
        (B, m.error_response(sqlstate="42703", message_text="column does not exist")
         + m.ready_for_query("I")),
        (F, m.terminate()),
    ]


def test_split_reads_at_every_offset() -> None:
    chunks = _session_for_chunking()
    expected = comparable(replay(chunks))
    assert len(statements(expected)) == 5
    longest = max(len(c) for _, c in chunks)
    for cut in range(1, longest):
        assert comparable(replay(rechunk(chunks, cut))) == expected, cut


def test_byte_at_a_time_and_merged_reads() -> None:
    chunks = _session_for_chunking()
    expected = comparable(replay(chunks))
    assert comparable(replay(bytewise(chunks))) == expected
    assert comparable(replay(merged(chunks))) == expected


def test_memoryview_and_bytearray_input() -> None:
    chunks = _session_for_chunking()
    expected = comparable(replay(chunks))
    assert comparable(replay([(d, memoryview(c)) for d, c in chunks])) == expected  # type: ignore
    assert comparable(replay([(d, bytearray(c)) for d, c in chunks])) == expected  # type: ignore


def test_overlapping_positions_are_ignored() -> None:
    conn = Connection()
    q = m.query("select 1")
    replay(STARTUP, conn=conn, close=False)
    fe = len(STARTUP[0][1])
    be = len(STARTUP[1][1])
    conn.feed(F, fe, q[:6], 10)
    conn.feed(F, fe, q, 11)  # resent from the start: the first 6 bytes are already seen
    conn.feed(F, fe, q[:3], 12)  # entirely old
    conn.feed(B, be, select_response(b"1"), 13)
    recs = conn.take_records()
    assert [s.text for s in statements(recs)] == ["select 1"] and not only(recs, Gap)


# =============================================================================================
# gaps, desync, resync, mid-session


def _positions(chunks: list[tuple[int, bytes]]) -> list[tuple[int, int, bytes]]:
    pos = [0, 0]
    out = []
    for d, c in chunks:
        out.append((d, pos[d], c))
        pos[d] += len(c)
    return out


def feed_with_positions(conn: Connection, items: list[tuple[int, int, bytes]]) -> list:
    for ts, (d, p, c) in enumerate(items, 1):
        conn.feed(d, p, c, ts)
    conn.close(len(items) + 1)
    return conn.take_records()


def test_gap_inside_datarow_bodies_is_harmless() -> None:
    rows = [b"%06d" % i + b"x" * 200 for i in range(100)]
    resp = select_response(*rows)
    chunks = STARTUP + [(F, m.query("select big")), (B, resp)]
    items = _positions(chunks)
    d, p, c = items[-1]
    # Lose 150 bytes in the middle of the 10th DataRow body.
    start = len(m.row_description(["x"])) + 9 * len(m.data_row([rows[0]])) + 20
    items[-1:] = [(d, p, c[:start]), (d, p + start + 150, c[start + 150:])]
    recs = feed_with_positions(Connection(), items)
    st = statements(recs)
    assert [(g.reason, g.bytes) for g in only(recs, Gap)] == [("dropped", 150)]
    assert (st[0].rows, st[0].rows_sent, st[0].flags) == (100, 100, 0)


def test_gap_inside_a_query_truncates_that_statement_only() -> None:
    long_sql = "select " + ", ".join(f"c{i}" for i in range(3000))
    q = m.query(long_sql)
    chunks = STARTUP + [(F, q[:8192]), (F, q[8192:16384]), (F, q[16384:]),
                        (B, select_response(b"1")),
                        (F, m.query("select 2")), (B, select_response(b"2"))]
    items = _positions(chunks)
    del items[3]  # the second 8 KiB read of the Query is lost
    recs = feed_with_positions(Connection(), items)
    st = statements(recs)
    assert [(g.reason, g.bytes) for g in only(recs, Gap)] == [("dropped", 8192)]
    assert st[0].flags == TRUNCATED and long_sql.startswith(st[0].text[:8000])
    assert st[0].command_tag == "SELECT"
    assert (st[1].text, st[1].flags) == ("select 2", 0)


def test_backend_gap_at_a_boundary_resyncs_on_ready_for_query() -> None:
    chunks = STARTUP + [(F, m.query("select a")), (B, select_response(b"1", b"2")),
                        (F, m.query("select b")), (B, select_response(b"3")),
                        (F, m.query("select c")), (B, select_response(b"4"))]
    items = _positions(chunks)
    d, p, c = items[3]
    cut = len(m.row_description(["x"]))
    items[3] = (d, p + cut, c[cut:])  # RowDescription lost: the chunk starts at a DataRow
    recs = feed_with_positions(Connection(), items)
    st = statements(recs)
    gaps = [(g.reason, g.bytes) for g in only(recs, Gap)]
    assert gaps[0] == ("dropped", cut)
    assert st[0].text == "select a" and st[0].flags & TRUNCATED
    assert [(s.text, s.rows, s.flags) for s in st[1:]] == [("select b", 1, 0),
                                                           ("select c", 1, 0)]


def test_backend_gap_mid_chunk_resyncs_on_the_pattern() -> None:
    chunks = STARTUP + [(F, m.query("select a")),
                        (B, select_response(b"1", b"2") + m.notice_response({"M": "n"})),
                        (F, m.query("select b")), (B, select_response(b"3"))]
    items = _positions(chunks)
    d, p, c = items[3]
    items[3:4] = [(d, p, c[:3]), (d, p + 10, c[10:])]  # loses a header: desync
    recs = feed_with_positions(Connection(), items)
    st = statements(recs)
    assert ("dropped", 7) in [(g.reason, g.bytes) for g in only(recs, Gap)]
    assert any(g.reason == "desync" for g in only(recs, Gap))
    assert st[0].flags & TRUNCATED and st[0].txn_status == "I"
    assert (st[1].text, st[1].rows, st[1].flags) == ("select b", 1, 0)


def test_frontend_gap_resyncs_at_next_valid_chunk() -> None:
    chunks = STARTUP + [(F, m.query("select a")), (B, select_response(b"1")),
                        (F, m.query("select lost")), (B, select_response(b"2")),
                        (F, m.query("select c")), (B, select_response(b"3"))]
    items = _positions(chunks)
    del items[4]  # the whole Query chunk is lost
    recs = feed_with_positions(Connection(), items)
    st = statements(recs)
    assert [(g.reason, g.bytes) for g in only(recs, Gap)] == [("dropped", len(chunks[4][1]))]
    assert [(s.protocol, s.text, s.rows, s.flags) for s in st] == [
        ("simple", "select a", 1, 0),
        ("unknown", None, 1, UNKNOWN_STATEMENT | TRUNCATED),  # reported, never dropped
        ("simple", "select c", 1, 0)]


def test_malformed_backend_bytes_desync_then_resync() -> None:
    chunks = STARTUP + [(F, m.query("select a")),
                        (B, b"\xff\xff\xff\xff\xff\xffgarbage" + select_response(b"1")[-6:]),
                        (F, m.query("select b")), (B, select_response(b"2"))]
    recs = replay(chunks)
    gaps = only(recs, Gap)
    assert [g.reason for g in gaps] == ["desync"] and gaps[0].bytes == 13
    st = statements(recs)
    assert st[0].flags == TRUNCATED and (st[1].text, st[1].flags) == ("select b", 0)


def test_malformed_frontend_bytes_desync_then_resync() -> None:
    chunks = STARTUP + [(F, b"\x00" * 40), (F, m.query("select b")), (B, select_response(b"2"))]
    recs = replay(chunks)
    assert [(g.reason, g.bytes) for g in only(recs, Gap)] == [("desync", 40)]
    assert [s.text for s in statements(recs)] == ["select b"]


def test_mid_session_attach_unknown_statement() -> None:
    # Attached while a pgbench -M prepared session runs: P0_1 was prepared before.
    chunks = [
        (B, m.data_row([b"tail of an old result"])[7:] + m.command_complete("SELECT 1")
         + m.ready_for_query("I")),
        (F, m.bind("", "P0_1", [b"17"]) + m.describe("P") + m.execute() + m.sync()),
        (B, m.bind_complete() + select_response(b"-42")),
        (F, m.query("select now()")), (B, select_response(b"2026")),
    ]
    recs = replay(chunks, mid_session=True)
    assert isinstance(recs[0], Gap) and (recs[0].reason, recs[0].bytes) == ("mid_session", 0)
    st = statements(recs)
    assert [(s.text, s.statement_name, s.flags, s.rows) for s in st] == [
        (None, "P0_1", UNKNOWN_STATEMENT, 1), ("select now()", None, 0, 1)]
    assert st[0].param_count == 1 and st[0].txn_status == "I"


def test_mid_session_attach_inside_a_query_text() -> None:
    q = m.query("select " + "x" * 9000)
    chunks = [(F, q[5000:]), (B, select_response(b"1")), (F, m.query("select 2")),
              (B, select_response(b"2"))]
    recs = replay(chunks, mid_session=True)
    st = statements(recs)
    assert [(s.text, s.flags) for s in st] == [(None, UNKNOWN_STATEMENT | TRUNCATED),
                                               ("select 2", 0)]


# =============================================================================================
# bounded memory


def test_huge_query_is_truncated_and_buffer_bounded() -> None:
    conn = Connection()
    replay(STARTUP, conn=conn, close=False)
    q = m.query("select '" + "y" * (5 * MESSAGE_CAP) + "'")
    pos = len(STARTUP[0][1])
    peak = 0
    for i in range(0, len(q), 8192):
        conn.feed(F, pos + i, q[i:i + 8192], i)
        peak = max(peak, len(conn._fe.buf))
    conn.feed(B, len(STARTUP[1][1]), select_response(b"1"), 10**9)
    st = statements(conn.take_records())
    assert st[0].flags == TRUNCATED and MESSAGE_CAP - 10 < len(st[0].text) <= MESSAGE_CAP + 8192
    assert st[0].command_tag == "SELECT"
    assert peak <= MESSAGE_CAP + 8192


def test_huge_datarow_is_never_buffered() -> None:
    conn = Connection()
    replay(STARTUP, conn=conn, close=False)
    conn.feed(F, len(STARTUP[0][1]), m.query("select big"), 1)
    resp = select_response(b"z" * (20 << 20))
    pos = len(STARTUP[1][1])
    for i in range(0, len(resp), 65536):
        conn.feed(B, pos + i, resp[i:i + 65536], 2)
        assert len(conn._be.buf) < 16
    st = statements(conn.take_records())
    assert (st[0].rows, st[0].rows_sent, st[0].flags) == (1, 1, 0)


# =============================================================================================
# records


def test_flag_names_and_statement_field_order() -> None:
    assert flag_names(SKIPPED | TRUNCATED) == ["skipped", "truncated"]
    assert [n for _, n in FLAG_NAMES] == ["unknown_statement", "skipped", "truncated",
                                          "incomplete"]
    # session._fe_execute builds Statement positionally for speed: pin the field order.
    names = [f.name for f in dataclasses.fields(Statement)]
    assert names[:22] == [
        "protocol", "text", "ts_start_ns", "query_seq", "statement_name", "portal", "seq",
        "ts_end_ns", "command_tag", "rows", "rows_sent", "sqlstate", "error_message",
        "error_severity", "error_constraint", "error_schema", "error_table", "txn_status",
        "param_count", "param_formats", "param_values", "flags"]


def test_no_exception_escapes_on_nonsense_arguments() -> None:
    conn = Connection()
    conn.feed(7, -5, b"\x00\x01", 0)
    conn.feed(F, 0, None, 0)  # type: ignore[arg-type]
    conn.feed(B, "x", b"abc", 0)  # type: ignore[arg-type]
    conn.close(1)
    conn.close(2)
    conn.take_records()


def test_statement_map_is_bounded_in_entries_and_text() -> None:
    from agent.pgwire import session

    conn = Connection()
    replay(STARTUP, conn=conn, close=False)
    pos = [len(STARTUP[0][1]), len(STARTUP[1][1])]
    big = "select '" + "x" * 500_000 + "'"
    for i in range(40):  # 40 x 0.5 MB of prepared statements: the oldest are forgotten
        chunk = m.parse(f"s{i}", big) + m.sync()
        conn.feed(F, pos[0], chunk, i)
        pos[0] += len(chunk)
        resp = m.parse_complete() + m.ready_for_query("I")
        conn.feed(B, pos[1], resp, i)
        pos[1] += len(resp)
    kept = conn.statement_map
    assert sum(len(t or "") for t in kept.values()) <= session.MAX_PREPARED_CHARS
    assert "s39" in kept and "s0" not in kept
    chunk = m.bind("", "s0") + m.execute() + m.sync()
    conn.feed(F, pos[0], chunk, 100)
    conn.feed(B, pos[1], m.bind_complete() + m.command_complete("SELECT 1")
              + m.ready_for_query("I"), 101)
    st = statements(conn.take_records())
    assert (st[-1].text, st[-1].flags) == (None, UNKNOWN_STATEMENT)


def test_many_prepared_statements_and_portals_stay_bounded() -> None:
    from agent.pgwire import session

    conn = Connection()
    replay(STARTUP, conn=conn, close=False)
    fe = bytearray()
    for i in range(session.MAX_PREPARED + 2000):
        fe += m.parse(f"s{i}", f"select {i}") + m.bind(f"p{i}", f"s{i}")
    conn.feed(F, len(STARTUP[0][1]), bytes(fe), 1)
    assert len(conn._stmts) <= session.MAX_PREPARED
    assert len(conn._portals) <= session.MAX_PREPARED
    last = session.MAX_PREPARED + 1999
    assert conn.statement_map[f"s{last}"] == f"select {last}"
    assert "s0" not in conn.statement_map and "p0" not in conn._portals

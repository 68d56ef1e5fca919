"""Codes of the PostgreSQL frontend/backend protocol 3.0: message type bytes, startup request codes,
authentication request codes, transaction status and ErrorResponse field codes.

Names are those of the PostgreSQL documentation, chapter "Frontend/Backend Protocol", sections
"Message Formats" (protocol-message-formats.html) and "Error and Notice Message Fields"
(protocol-error-fields.html). Frontend and backend type bytes are two separate enums because the
same byte means different messages in each direction ('D' is Describe from the client and DataRow
from the server; 'E', 'C', 'S', 'd', 'c', 'H' also differ).
"""

from __future__ import annotations

from enum import IntEnum


class FrontendType(IntEnum):
    """Type byte of a message sent by the client (frontend)."""

    Bind = ord("B")
    Close = ord("C")
    CopyData = ord("d")
    CopyDone = ord("c")
    CopyFail = ord("f")
    Describe = ord("D")
    Execute = ord("E")
    Flush = ord("H")
    FunctionCall = ord("F")
    # One byte for four messages; the server knows which from the authentication state.
    PasswordMessage = ord("p")
    GSSResponse = ord("p")
    SASLInitialResponse = ord("p")
    SASLResponse = ord("p")
    Parse = ord("P")
    Query = ord("Q")
    Sync = ord("S")
    Terminate = ord("X")


class BackendType(IntEnum):
    """Type byte of a message sent by the server (backend)."""

    Authentication = ord("R")
    BackendKeyData = ord("K")
    BindComplete = ord("2")
    CloseComplete = ord("3")
    CommandComplete = ord("C")
    CopyInResponse = ord("G")
    CopyOutResponse = ord("H")
    CopyBothResponse = ord("W")
    CopyData = ord("d")
    CopyDone = ord("c")
    DataRow = ord("D")
    EmptyQueryResponse = ord("I")
    ErrorResponse = ord("E")
    FunctionCallResponse = ord("V")
    NegotiateProtocolVersion = ord("v")
    NoData = ord("n")
    NoticeResponse = ord("N")
    NotificationResponse = ord("A")
    ParameterDescription = ord("t")
    ParameterStatus = ord("S")
    ParseComplete = ord("1")
    PortalSuspended = ord("s")
    ReadyForQuery = ord("Z")
    RowDescription = ord("T")


class StartupCode(IntEnum):
    """The Int32 after the length of an untagged startup packet (the first client message)."""

    CancelRequest = 80877102  # 1234 << 16 | 5678
    SSLRequest = 80877103  # 1234 << 16 | 5679
    GSSENCRequest = 80877104  # 1234 << 16 | 5680


PROTOCOL_3_0 = 196608  # 3 << 16: the StartupMessage protocol version of PostgreSQL 7.4..17
PROTOCOL_3_2 = 196610  # PostgreSQL 18 clients may ask for it


def protocol_version_str(code: int) -> str:
    """"3.0" for 196608: the major version is the high 16 bits, the minor the low 16 bits."""
    return f"{code >> 16}.{code & 0xFFFF}"


class AuthenticationCode(IntEnum):
    """The Int32 that selects which Authentication* message an 'R' message is."""

    Ok = 0
    KerberosV5 = 2
    CleartextPassword = 3
    MD5Password = 5
    SCMCredential = 6  # removed in PostgreSQL 9.1; kept so old captures decode
    GSS = 7
    GSSContinue = 8
    SSPI = 9
    SASL = 10
    SASLContinue = 11
    SASLFinal = 12


class TransactionStatus(IntEnum):
    """The status byte of ReadyForQuery."""

    Idle = ord("I")
    InTransaction = ord("T")
    Failed = ord("E")  # in a failed transaction block: statements are refused until its end


class ErrorField(IntEnum):
    """Field codes of ErrorResponse and NoticeResponse (protocol-error-fields)."""

    Severity = ord("S")  # localized
    SeverityNonLocalized = ord("V")  # PostgreSQL 9.6+: never localized, prefer it
    Code = ord("C")  # SQLSTATE
    Message = ord("M")
    Detail = ord("D")
    Hint = ord("H")
    Position = ord("P")
    InternalPosition = ord("p")
    InternalQuery = ord("q")
    Where = ord("W")
    SchemaName = ord("s")
    TableName = ord("t")
    ColumnName = ord("c")
    DataTypeName = ord("d")
    ConstraintName = ord("n")
    File = ord("F")
    Line = ord("L")
    Routine = ord("R")


# The one-byte answers to SSLRequest / GSSENCRequest (not framed as messages).
SSL_ACCEPTED = ord("S")
GSSENC_ACCEPTED = ord("G")
ENCRYPTION_REFUSED = ord("N")

"""Sans-I/O decoder of the PostgreSQL frontend/backend protocol 3.0 (PostgreSQL 7.4 to 17).

- `codes`: type bytes (FrontendType, BackendType) and other protocol constants.
- `messages`: one frozen dataclass per protocol message, named as in the PostgreSQL docs, and
  their parse functions (the documented model; PasswordMessage/SASL bodies never kept).
- `decoder`: framing per direction, length bounds, resynchronisation, a message-object decoder.
- `session`: `Connection`, the per-connection state machine the agent feeds with captured
  bytes; it emits the records of `records` (StartupInfo, Statement, Gap, SessionEnd, ...).
"""

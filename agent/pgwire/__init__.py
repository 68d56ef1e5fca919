"""Sans-I/O decoder of the PostgreSQL frontend/backend protocol 3.0 (as PostgreSQL 15 speaks it).

- `codes`: type bytes (FrontendType, BackendType, separate per direction) and other constants.
- `messages`: one frozen dataclass per protocol message, named as in the PostgreSQL docs
  (protocol-message-formats), and their parse functions: the documented model. Password/SASL
  bodies, DataRow/CopyData values and secret keys are never kept, only lengths.
- `decoder`: framing per direction (length bounds, resynchronisation patterns and chain checks)
  and `StreamDecoder`, a message-object decoder for tools and tests.
- `session`: `Connection`, the per-connection state machine the agent feeds with captured
  bytes and stream positions; it emits the records of `records` (StartupInfo, Statement, Gap,
  SessionEnd, CancelInfo, Authenticated).
- `encode`: message encoders, to build exact byte streams (tests, benchmarks, replay tools).
"""

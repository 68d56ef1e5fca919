"""Agent-side helpers for dynamic masking: a seeded PII cluster for tests and benchmarks
(`agent.masking.testing`). The masking itself lives in the extension (pgwarden_ext/mask.py,
pg_extension/sql/0.1/45_masking.sql); see docs/masking.md."""

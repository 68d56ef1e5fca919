"""The collector: HTTP ingest of the agent's event batches, storage, and the read side for queries.

Modules, one concern each (the event schema they implement is docs/events.md):

    ingest.py      pure decoding + validation of a batch (no I/O)
    api.py         the Starlette app: POST /v1/ingest, GET /v1/health
    server.py      binds the socket and runs the app under uvicorn
    schema.py      the current tables (SQLAlchemy Core)
    migrations.py  numbered, frozen migrations that build schema.py in a store
    storage.py     `open_store()`: SQLite file or PostgreSQL URL, migrated at open
    writer.py      one validated batch -> rows, in the caller's transaction
    relations.py   relation names referenced by a statement (pglast), cached by fingerprint
    query.py       filters and reads for `pgwarden sessions|session|statements`
    render.py      rich tables for those commands
    times.py       microsecond timestamps <-> ISO 8601, and `--since 15m` parsing
"""

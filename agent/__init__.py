"""pgwarden: govern and observe PostgreSQL access without a proxy.

The package holds the host agent (eBPF capture, pgwire decoding, identity, shipping), the
collector (ingest, storage, queries) and the tooling of the in-database extension (policy,
audit). `agent.cli` is the command line; every other module is a library it calls.
"""

__version__ = "0.1.0"

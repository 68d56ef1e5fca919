"""pgwarden_ext: the Python half of the pgwarden PostgreSQL extension.

Runs inside PostgreSQL backends (PL/Python, Debian's /usr/bin/python3), imported by thin
PL/Python shims declared in ``pgwarden--<version>.sql``. Every entry point takes ``plpy`` (and the
PL/Python ``GD`` dict) as arguments, so the modules import without a server and the pure parts
(``lexer``, ``classify``, ``policy``) are unit-tested from the project's virtualenv.

Modules:
    lexer     SQL tokens, literal-free normalization and fingerprints (no dependency)
    classify  what a statement text does to a table: restricted, unrestricted or opaque (sqlglot)
    policy    the canonical policy document and rule resolution per (object, principal)
    state     per-backend cache (GD): compiled policy, principal, per-transaction row counters
    decide    turns a rule's action into a ledger record and, when blocking, a PW SQLSTATE error
    guard     entry points called by the guard triggers and event triggers
    ledger    canonical record payloads, autonomous (dblink) writes, the hash chain
    apply     policy plan/apply: patterns -> objects -> guard triggers, and the exact diff
    drift     everything that weakens enforcement
"""

__version__ = "0.1"

"""Throwaway clusters with pgwarden installed, a seeded schema and a policy, for tests and benches.

`GuardedCluster` installs pgwarden in a template database, seeds the ``app`` schema (owned by
role app_owner; app_rw and migrator may read and write) and applies `TEST_POLICY`; each test
gets its own copy with `new_db()` (CREATE DATABASE ... TEMPLATE: same OIDs, so the guards, the
registry and the ledger come along). `run_psql` (simple protocol, psql) and `run_extended`
(psycopg, bind parameters, extended protocol) return an `Outcome` with the SQLSTATE and the rule
read from the ErrorResponse. `snapshot()` captures data and structure of every table in ``app``,
so a test can assert that nothing changed.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from agent.db import install as installer
from agent.pgcluster import PG_BIN, PgCluster
from agent.policy import client
from agent.policy.schema import load

TEMPLATE = "pw_template"
ROLES = ("app_owner", "app_rw", "migrator", "etl")

TEST_POLICY = """\
version: 1
protect:
  - name: core
    tables: [app.customers, app.orders, app.events, app.big_orders, app.invoice_seq]
    schemas: [app]
    functions: [app.order_total]
    columns: [id, api_key]
    rules:
      max_rows: {statement: 500, transaction: 2000}
principals:
  - name: migrations
    match: {roles: [migrator]}
    rules:
      no_drop: allow
      no_truncate: allow
      no_rewrite: allow
      require_where: allow
      opaque_write: allow
      max_rows: {statement: off, transaction: off}
  - name: etl
    match: {roles: [etl]}
    rules:
      opaque_write: allow
      max_rows: {opaque_statement: 50}
"""

SEED = """
CREATE SCHEMA app AUTHORIZATION app_owner;
SET ROLE app_owner;
CREATE TABLE app.customers (id int PRIMARY KEY, email text NOT NULL, api_key text, note text);
CREATE TABLE app.orders (id int PRIMARY KEY,
                         customer_id int REFERENCES app.customers ON DELETE CASCADE,
                         amount numeric NOT NULL, status text NOT NULL DEFAULT 'new');
CREATE TABLE app.events (id int NOT NULL, at date NOT NULL, kind text) PARTITION BY RANGE (at);
CREATE TABLE app.events_2025 PARTITION OF app.events
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.events_2026 PARTITION OF app.events
  FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE app.scratch (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
CREATE VIEW app.big_orders AS SELECT * FROM app.orders WHERE amount > 900;
CREATE SEQUENCE app.invoice_seq;
CREATE FUNCTION app.order_total(c int) RETURNS numeric LANGUAGE sql STABLE
  AS $$ SELECT sum(amount) FROM app.orders WHERE customer_id = c $$;
INSERT INTO app.customers
  SELECT g, 'user' || g || '@example.com', md5(g::text), NULL FROM generate_series(1, 1000) g;
INSERT INTO app.orders
  SELECT g, (g % 1000) + 1, g % 997, 'new' FROM generate_series(1, 3000) g;
INSERT INTO app.events
  SELECT g, DATE '2025-06-01' + (g % 400), 'k' || (g % 7) FROM generate_series(1, 800) g;
INSERT INTO app.scratch SELECT g, 0 FROM generate_series(1, 100) g;
RESET ROLE;
GRANT USAGE ON SCHEMA app TO app_rw, migrator, etl;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA app
  TO app_rw, migrator, etl;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA app TO app_rw, migrator, etl;
"""

_counter = itertools.count(1)


@dataclass(frozen=True)
class Outcome:
    """What the client saw: `ok`, and for errors the SQLSTATE, the rule (constraint-name
    field), the message; `output` is psql's stdout (simple protocol) or the rowcount."""

    ok: bool
    sqlstate: str | None = None
    rule: str | None = None
    message: str = ""
    output: str = ""

    @property
    def blocked(self) -> bool:
        return self.sqlstate == "PW001"


class GuardedCluster:
    """A running throwaway cluster with pgwarden and the test schema (see module docstring)."""

    def __init__(self, settings: dict[str, str] | None = None, policy: str = TEST_POLICY,
                 seed: str = SEED) -> None:
        self.cluster = PgCluster(Path(tempfile.mkdtemp(prefix="pgwarden-ext-")),
                                 settings=settings or {})
        self.policy, self.seed = policy, seed

    def start(self) -> "GuardedCluster":
        self.cluster.start()
        admin = self.cluster.dsn()
        with psycopg.connect(admin, autocommit=True) as conn:
            for role in ROLES:
                conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        dsn = self.cluster.dsn(TEMPLATE)
        installer.install(dsn)
        if self.seed:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(self.seed)
        if self.policy:
            client.apply(dsn, load(self.policy), None)
        return self

    def destroy(self) -> None:
        self.cluster.destroy()

    def new_db(self) -> str:
        """A fresh copy of the template; returns its name."""
        name = f"t{next(_counter)}"
        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return name

    def dsn(self, db: str, user: str | None = None, via: str = "unix") -> str:
        return self.cluster.dsn(db, user, via)

    def sql(self, db: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run `query` as the superuser and return its rows (autocommit)."""
        with psycopg.connect(self.dsn(db), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def run_psql(self, db: str, user: str, sql: str) -> Outcome:
        """`sql` as ONE simple-protocol Query message (psql -c), verbose errors."""
        cmd = [str(PG_BIN / "psql"), "-X", "-A", "-t", "-v", "VERBOSITY=verbose",
               "-d", self.dsn(db, user), "-c", sql]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        err = re.search(r"ERROR:\s+([0-9A-Z]{5}):\s+(.*)", p.stderr)
        if p.returncode == 0 and not err:
            return Outcome(True, output=p.stdout)
        rule = re.search(r"CONSTRAINT NAME:\s+(\S+)", p.stderr)
        return Outcome(False, err.group(1) if err else None, rule.group(1) if rule else None,
                       err.group(2) if err else p.stderr.strip(), p.stdout)

    def run_extended(self, db: str, user: str, sql: str, params: Any = (),
                     prepare: bool = False) -> Outcome:
        """`sql` with bind parameters (extended protocol: Parse/Bind/Execute), one transaction."""
        try:
            with psycopg.connect(self.dsn(db, user)) as conn:
                cur = conn.execute(sql, params, prepare=prepare)
                conn.commit()
                return Outcome(True, output=str(cur.rowcount))
        except psycopg.Error as e:
            return Outcome(False, e.sqlstate, e.diag.constraint_name, e.diag.message_primary or "")

    def snapshot(self, db: str) -> dict[str, Any]:
        """Data (row count + md5 of the sorted rows) and structure of every relation in app."""
        out: dict[str, Any] = {}
        with psycopg.connect(self.dsn(db), autocommit=True) as conn:
            rels = conn.execute(
                "SELECT c.oid::regclass::text, c.relkind::text FROM pg_class c"
                " WHERE c.relnamespace = to_regnamespace('app') ORDER BY 1").fetchall()
            for rel, kind in rels:
                cols = conn.execute(
                    "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', '"
                    " ORDER BY attnum) FROM pg_attribute WHERE attrelid = %s::regclass"
                    " AND attnum > 0 AND NOT attisdropped", [rel]).fetchone()[0]
                data = None
                if kind in ("r", "p"):
                    data = conn.execute(
                        f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY"
                        f" t::text), '')) FROM {rel} t").fetchone()
                elif kind == "S":
                    data = conn.execute(f"SELECT last_value FROM {rel}").fetchone()
                out[rel] = (kind, cols, data)
            out["#schemas"] = conn.execute(
                "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace").fetchone()
            out["#triggers"] = conn.execute(
                "SELECT string_agg(tgrelid::regclass || '.' || tgname || ':' || tgenabled::text, ','"
                " ORDER BY 1) FROM pg_trigger WHERE tgname LIKE 'zz_pgwarden%'").fetchone()
            out["#functions"] = conn.execute(
                "SELECT string_agg(oid::regprocedure::text, ',' ORDER BY 1) FROM pg_proc"
                " WHERE pronamespace = to_regnamespace('app')").fetchone()
        return out

    def ledger(self, db: str) -> list[dict[str, Any]]:
        """Ledger records (staged ones chained first), oldest first."""
        import json

        with psycopg.connect(self.dsn(db), autocommit=True) as conn:
            conn.execute("SELECT pgwarden.chain_pending()")
            return [json.loads(p) for (p,) in conn.execute(
                "SELECT payload FROM pgwarden.ledger ORDER BY seq").fetchall()]

"""A throwaway cluster with pgwarden, a seeded PII schema and a masking policy built from
`pgwarden discover`'s own suggestions, for the masking tests and benchmarks.

`MaskedCluster.start()`:

1. starts a cluster, creates roles ``app_owner`` (owns schema ``app``), ``ai_reader`` (an AI
   agent's own role: masked in every session), ``app`` (one role shared by two programs: the
   billing service and an AI agent; the attested identity decides), ``analyst`` (not governed:
   real values) and ``reporting`` (a NOLOGIN group that may read the tables, which ai_reader is
   a member of: lock-down revokes that);
2. installs pgwarden in a template database and seeds ``app.customers`` (names, emails,
   phones, payment cards, US SSNs, IBANs, API keys, dates of birth) plus ``app.orders`` and
   ``app.newsletter``; every generated PII value is kept in `secrets` (to search clients'
   output for) and never printed;
3. runs ``pgwarden discover --write-suggestions`` and builds the policy from that fragment,
   verbatim, plus who is masked (`policy_text`), and applies it.

Each test gets its own copy with `new_db()` (CREATE DATABASE ... TEMPLATE, then the policy is
applied again: per-database role settings and the database's ACL are not copied by TEMPLATE).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import random
import re
import string
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from agent.db import install as installer
from agent.pgcluster import PG_BIN, PgCluster, make_workdir
from agent.pii.validators import luhn_ok
from agent.policy import client
from agent.policy.schema import Policy, load

TEMPLATE = "mask_template"
ROWS = 200
MASKING_HEAD = """\
  mask:
    roles: [ai_reader]
    identities: [ai-agent]
  shared_roles: [app]
"""

FIRST = ["Johannes", "Margaret", "Christopher", "Isabella", "Alexander", "Catherine", "Benjamin",
         "Charlotte", "Frederick", "Eleonora", "Sebastian", "Gabriela", "Maximilian", "Victoria",
         "Theodore", "Annabelle", "Nathaniel", "Josephine", "Leonardo", "Francesca"]
LAST = ["Harrington", "Whitfield", "Montgomery", "Castellano", "Lindqvist", "Okonkwo",
        "Vasquez-Moreno", "Kowalczyk", "Delacroix", "Fitzgerald", "Nakamura", "Abernathy",
        "Rosenthal", "Valdivieso", "Thorvaldsen", "Ellingsworth"]


class Seed:
    """Deterministic realistic values (valid check digits), remembered as secrets."""

    def __init__(self, seed: int = 4) -> None:
        self.r = random.Random(seed)
        self.secrets: list[str] = []

    def keep(self, value: str) -> str:
        self.secrets.append(value)
        return value

    def digits(self, n: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(n))

    def name(self) -> str:
        return self.keep(f"{self.r.choice(FIRST)} {self.r.choice(LAST)}")

    def email(self, name: str, i: int) -> str:
        first, last = name.lower().split(" ", 1)
        domain = self.r.choice(["example.com", "mail.example.org", "corp.example.net"])
        return self.keep(f"{first}.{last.replace('-', '')}{i}@{domain}")

    def phone(self) -> str:
        return self.keep(f"+1{self.r.randint(201, 989)}{self.r.randint(200, 999)}{self.digits(4)}")

    def card(self) -> str:
        body = "4" + self.digits(14)
        number = next(body + d for d in string.digits if luhn_ok(body + d))
        return self.keep(" ".join(number[i:i + 4] for i in range(0, 16, 4)))

    def ssn(self) -> str:
        while True:
            area = self.r.randint(1, 899)
            if area != 666:
                return self.keep(f"{area:03d}-{self.r.randint(1, 99):02d}-"
                                 f"{self.r.randint(1, 9999):04d}")

    def iban(self) -> str:
        bban = self.digits(18)
        numeric = "".join(str(int(ch, 36)) for ch in bban + "DE00")
        compact = f"DE{98 - int(numeric) % 97:02d}{bban}"
        return self.keep(" ".join(compact[i:i + 4] for i in range(0, len(compact), 4)))

    def api_key(self) -> str:
        alnum = string.ascii_letters + string.digits
        return self.keep("sk_live_" + "".join(self.r.choice(alnum) for _ in range(24)))

    def jwt(self) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps({"sub": str(self.r.randint(1, 10**6)), "scope": "rw"}).encode())
        sig = b64(hmac.new(b"k", f"{head}.{body}".encode(), hashlib.sha256).digest())
        return self.keep(f"{head}.{body}.{sig}")

    def dob(self) -> dt.date:
        return dt.date(1950, 1, 1) + dt.timedelta(days=self.r.randint(0, 365 * 50))


SCHEMA = """
CREATE SCHEMA app AUTHORIZATION app_owner;
SET ROLE app_owner;
CREATE TABLE app.customers (
  id int PRIMARY KEY, full_name text NOT NULL, email text NOT NULL UNIQUE, phone text,
  card_number text, ssn text, iban text, api_key text, session_token text, birth_date date,
  status text NOT NULL DEFAULT 'active', created_at date NOT NULL DEFAULT DATE '2025-01-01');
CREATE TABLE app.orders (
  id int PRIMARY KEY, customer_id int NOT NULL REFERENCES app.customers, amount numeric NOT NULL,
  card_number text, shipped boolean NOT NULL DEFAULT false);
CREATE TABLE app.newsletter (email text PRIMARY KEY, topic text NOT NULL);
RESET ROLE;
CREATE TABLE public.pgbench_seen (v text);
GRANT INSERT ON public.pgbench_seen TO ai_reader, app, analyst;
GRANT USAGE ON SCHEMA app TO reporting, ai_reader, app, analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA app TO reporting, analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA app TO ai_reader, app;
"""
ROLES = {"app_owner": "LOGIN", "ai_reader": "LOGIN", "app": "LOGIN", "analyst": "LOGIN",
         "reporting": "NOLOGIN"}
_counter = itertools.count(1)


@dataclass(frozen=True)
class Output:
    """What a client printed (stdout + stderr) and whether it succeeded."""

    ok: bool
    text: str
    sqlstate: str | None = None


class MaskedCluster:
    """See the module docstring."""

    def __init__(self, rows: int = ROWS, settings: dict[str, str] | None = None) -> None:
        self.cluster = PgCluster(make_workdir("pgwarden-mask-"), settings=settings or {})
        self.rows = rows
        self.seed = Seed()
        self.secrets: list[str] = []
        self.customers: list[dict[str, Any]] = []
        self.suggestions = ""
        self.policy_text = ""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MaskedCluster:
        self.cluster.start()
        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
            for role, attrs in ROLES.items():
                conn.execute(f"CREATE ROLE {role} {attrs}")
            conn.execute("GRANT reporting TO ai_reader")
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        dsn = self.dsn(TEMPLATE)
        installer.install(dsn)
        self._seed(dsn)
        self.suggestions = self.discover(dsn)
        self.policy_text = self.policy_from(self.suggestions)
        client.apply(dsn, self.policy, None)
        return self

    def destroy(self) -> None:
        self.cluster.destroy()

    @property
    def policy(self) -> Policy:
        return load(self.policy_text)

    def new_db(self, apply: bool = True) -> str:
        """A fresh copy of the template, with the policy applied to it (roles' search_path and
        the database's TEMP privilege are per database)."""
        name = f"m{next(_counter)}"
        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        if apply:
            client.apply(self.dsn(name), self.policy, None)
        return name

    def dsn(self, db: str, user: str | None = None, **extra: str) -> str:
        return self.cluster.dsn(db, user, "unix", **extra)

    # -- seeding and discovery -----------------------------------------------------------------

    def _seed(self, dsn: str) -> None:
        s = self.seed
        rows, orders, letters = [], [], []
        for i in range(1, self.rows + 1):
            name = s.name()
            row = {"id": i, "full_name": name, "email": s.email(name, i), "phone": s.phone(),
                   "card_number": s.card(), "ssn": s.ssn(), "iban": s.iban(),
                   "api_key": s.api_key(), "session_token": s.jwt(), "birth_date": s.dob()}
            rows.append(row)
            orders.append((i, i, 10 + i % 90, s.card()))
            if i % 2:
                letters.append((row["email"], "weekly"))
        self.customers = rows
        self.secrets = sorted(set(s.secrets), key=len, reverse=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO app.customers (id, full_name, email, phone, card_number, ssn,"
                    " iban, api_key, session_token, birth_date) VALUES (%(id)s, %(full_name)s,"
                    " %(email)s, %(phone)s, %(card_number)s, %(ssn)s, %(iban)s, %(api_key)s,"
                    " %(session_token)s, %(birth_date)s)", rows)
                cur.executemany("INSERT INTO app.orders (id, customer_id, amount, card_number)"
                                " VALUES (%s, %s, %s, %s)", orders)
                cur.executemany("INSERT INTO app.newsletter VALUES (%s, %s)", letters)
            for role in ("ai_reader", "app", "analyst"):
                conn.execute(f"ALTER ROLE {role} SET search_path = app, public")
            conn.execute("ANALYZE")

    def discover(self, dsn: str) -> str:
        """`pgwarden discover --write-suggestions` on the seeded database: the fragment."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "suggestions.yaml"
            p = subprocess.run([sys.executable, "-m", "agent.cli", "discover", "--dsn", dsn,
                                "--schema", "app", "--json", "--write-suggestions", str(out)],
                               capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                raise RuntimeError(f"pgwarden discover failed: {p.stderr[-2000:]}")
            return out.read_text()

    @staticmethod
    def policy_from(suggestions: str, head: str = MASKING_HEAD) -> str:
        """pgwarden.yaml: version, then the suggestions fragment verbatim, then who is masked
        (appended to the fragment's `masking:` mapping)."""
        assert re.search(r"^masking:\n  columns:\n", suggestions, re.M), suggestions[:300]
        return "version: 1\n" + suggestions.rstrip("\n") + "\n" + head

    # -- clients ---------------------------------------------------------------------------------

    def psql(self, db: str, user: str, sql: str, **extra: str) -> Output:
        """`sql` through psql (simple protocol), aligned output, verbose errors."""
        cmd = [str(PG_BIN / "psql"), "-X", "-v", "VERBOSITY=verbose", "-d",
               self.dsn(db, user, **extra), "-c", sql]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        state = re.search(r"ERROR:\s+([0-9A-Z]{5}):", p.stderr)
        return Output(p.returncode == 0 and not state, p.stdout + p.stderr,
                      state.group(1) if state else None)

    def psql_script(self, db: str, user: str, script: str) -> Output:
        """A multi-statement script through psql -f (stops at the first error)."""
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(script)
        Path(f.name).chmod(0o644)
        cmd = [str(PG_BIN / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose",
               "-d", self.dsn(db, user), "-f", f.name]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        Path(f.name).unlink()
        state = re.search(r"ERROR:\s+([0-9A-Z]{5}):", p.stderr)
        return Output(p.returncode == 0, p.stdout + p.stderr, state.group(1) if state else None)

    def psycopg(self, db: str, user: str, sql: str, params: Any = (),
                prepare: bool = True) -> Output:
        """`sql` with bind parameters (extended protocol); the rows repr'd as the output."""
        try:
            with psycopg.connect(self.dsn(db, user), autocommit=True) as conn:
                cur = conn.execute(sql, params, prepare=prepare)
                rows = cur.fetchall() if cur.description else []
                return Output(True, repr(rows))
        except psycopg.Error as e:
            return Output(False, f"{e.sqlstate}: {e}\n{e.diag.message_detail or ''}", e.sqlstate)

    def pgbench(self, db: str, user: str, script: str, mode: str = "extended",
                transactions: int = 20) -> Output:
        """Run a pgbench custom script (-f) and return what it stored in public.pgbench_seen
        (the script's way of showing what it read: pgbench prints no rows)."""
        with tempfile.NamedTemporaryFile("w", suffix=".pgbench", delete=False) as f:
            f.write(script)
        Path(f.name).chmod(0o644)
        with psycopg.connect(self.dsn(db), autocommit=True) as conn:
            conn.execute("TRUNCATE public.pgbench_seen")
        cmd = [str(PG_BIN / "pgbench"), "-n", "-M", mode, "-t", str(transactions),
               "-f", f.name, self.dsn(db, user)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        Path(f.name).unlink()
        with psycopg.connect(self.dsn(db), autocommit=True) as conn:
            seen = [r[0] for r in conn.execute("SELECT v FROM public.pgbench_seen")]
        return Output(p.returncode == 0, p.stdout + p.stderr + "\n".join(seen))

    def sql(self, db: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """As the superuser (autocommit)."""
        with psycopg.connect(self.dsn(db), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    # -- attestation -----------------------------------------------------------------------------

    def attest(self, db: str, conn: psycopg.Connection, identity: dict[str, Any]) -> dict[str, Any]:
        """Register `conn`'s backend as the host agent would (role pgwarden_agent)."""
        with psycopg.connect(self.dsn(db, "pgwarden_agent"), autocommit=True) as agent:
            start = backend_start(conn)
            return agent.execute("SELECT pgwarden.attest(%s, %s, %s::jsonb)",
                                 [conn.info.backend_pid, start, json.dumps(identity)]
                                 ).fetchone()[0]  # type: ignore[index]

    # -- the check every bypass test makes ---------------------------------------------------------

    def leaks(self, text: str, secrets: Iterable[str] | None = None) -> list[str]:
        """The seeded PII values found in `text` (also without their spaces and dashes)."""
        found = []
        compact_text = re.sub(r"[ \-]", "", text)
        for value in secrets if secrets is not None else self.secrets:
            if value in text:
                found.append(value)
                continue
            compact = re.sub(r"[\s\-]", "", value)
            if len(compact) >= 9 and compact.isdigit() and compact in compact_text:
                found.append(value)
        return found


def backend_start(conn: psycopg.Connection) -> dt.datetime:
    return conn.execute("SELECT backend_start FROM pg_stat_activity"  # type: ignore[index]
                        " WHERE pid = pg_backend_pid()").fetchone()[0]


__all__ = ["MaskedCluster", "Output", "Seed", "backend_start", "MASKING_HEAD"]

"""Shared by tests/test_approvals_*.py and tests/test_notify_*.py: a guarded cluster whose policy
sends writes for approval, a real HTTP receiver on loopback, and the relay as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

from agent.db.testing import TEMPLATE, GuardedCluster
from agent.pgcluster import wait_for

ROOT = Path(__file__).resolve().parents[1]
SECRET = "test-webhook-secret"

APPROVAL_POLICY = """\
version: 1
protect:
  - name: core
    tables: [app.customers, app.orders, app.events, app.big_orders]
    schemas: [app]
    columns: [id, api_key]
    rules:
      require_where: approve
      no_truncate: approve
      no_drop: approve
      max_rows: {statement: 100, transaction: 2000, action: approve}
approvals:
  request_ttl: 1h
  grant_ttl: 10m
  reviewers: {roles: [reviewer, alice], member_of: [secops]}
"""

# an UPDATE whose result shows how often it ran: 288 orders have amount > 900
BIG_UPDATE = "UPDATE app.orders SET amount = amount + 1 WHERE amount > 900"


def start_cluster(policy: str = APPROVAL_POLICY) -> GuardedCluster:
    gc = GuardedCluster(policy=policy).start()
    gc.sql(TEMPLATE, """
        DO $$ BEGIN
          CREATE ROLE reviewer LOGIN; CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN;
          CREATE ROLE secops NOLOGIN; GRANT secops TO bob;
        END $$;
        GRANT USAGE ON SCHEMA app TO alice;
        GRANT SELECT, UPDATE, DELETE ON ALL TABLES IN SCHEMA app TO alice""")
    return gc


def request_row(gc: GuardedCluster, db: str, rid: int) -> dict[str, Any]:
    return gc.sql(db, "SELECT r FROM pgwarden.approval_requests(NULL, %s) r", [rid])[0][0]


def approve(gc: GuardedCluster, db: str, rid: int, user: str = "reviewer") -> dict[str, Any]:
    with psycopg.connect(gc.dsn(db, user), autocommit=True) as conn:
        return conn.execute("SELECT pgwarden.approve(%s, 'looks fine', 'test-os-user')",
                            [rid]).fetchone()[0]


def request_id(message: str) -> int:
    """The id a PW002 message names (`approval request <id>`, docs/approvals.md)."""
    import re

    m = re.search(r"approval request (\d+)", message)
    assert m, message
    return int(m.group(1))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`pgwarden ...` as a real process."""
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, **(env or {})})


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on loopback that records every POST (and answers 200)."""

    port: int = 0
    got: list[Delivery] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                got.append(Delivery(self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait(self, predicate: Any, timeout: float = 60.0) -> list[Delivery]:
        assert wait_for(lambda: predicate(self.got), timeout=timeout, interval=0.2), \
            f"receiver got {[(d.path, d.headers.get('X-Pgwarden-Event')) for d in self.got]}"
        return self.got


class RelayProcess:
    """`pgwarden notify run` as a real process."""

    def __init__(self, dsn: str, args: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "notify", "run", "--dsn", dsn, "--poll", "0.5",
             *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"),
            env={**os.environ, "PGWARDEN_WEBHOOK_SECRET": SECRET,
                 "PGWARDEN_COLLECTOR_TOKEN": "test-token"})

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()

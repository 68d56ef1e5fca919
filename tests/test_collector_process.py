"""The real `pgwarden collector run` process, and helpers the other collector tests share.

`CollectorProcess` starts the installed `pgwarden` executable on a real port with a real store
(SQLite file or PostgreSQL database) and stops it with SIGTERM. The event builders make
docs/events.md maps. The tests here cover the command itself: its status line, token and
configuration handling, logging of refused requests, and a clean stop.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from sqlalchemy import func, select

from agent.collector import migrations, schema
from agent.collector.storage import open_store
from agent.pgcluster import PgCluster, wait_for

PGWARDEN = str(Path(sys.executable).with_name("pgwarden"))
TOKEN = "test-token-0123456789"
BASE_US = 1_714_564_800_000_000  # 2024-05-01T12:00:00Z


# -- event builders ------------------------------------------------------------------------------

def session_started(sid: str, ts_us: int, **fields: Any) -> dict[str, Any]:
    event = {"type": "session.started", "ts_us": ts_us, "session_id": sid, "backend_pid": 1000,
             "backend_start_us": ts_us - 10, "user": "app", "database": "shop",
             "application_name": "", "protocol_version": "3.0", "transport": "tcp",
             "tls": False, "client_addr": "127.0.0.1", "client_port": 50000,
             "identity_source": "tcp_connect", "attached_mid_session": False,
             "capture_source": "secure_rw"}
    event.update(fields)
    return event


def statement(sid: str, seq: int, ts_us: int, text: str = "SELECT $1",
              **fields: Any) -> dict[str, Any]:
    event = {"type": "statement.executed", "ts_us": ts_us, "session_id": sid, "seq": seq,
             "query_seq": seq, "duration_us": 120, "protocol": "simple", "statement": text,
             "statement_raw": False, "fingerprint": None, "command_tag": "SELECT", "rows": 1,
             "txn_status": "I", "flags": []}
    event.update(fields)
    return event


def session_ended(sid: str, ts_us: int, **fields: Any) -> dict[str, Any]:
    event = {"type": "session.ended", "ts_us": ts_us, "session_id": sid, "reason": "terminate",
             "statements": 0, "bytes_in": 100, "bytes_out": 200}
    event.update(fields)
    return event


def batch(events: list[dict[str, Any]], seq: int = 1, agent_id: str = "agent-1",
          **overrides: Any) -> dict[str, Any]:
    body = {"schema_version": 1, "batch_seq": seq, "events": events,
            "agent": {"agent_id": agent_id, "host": "db1", "boot_id": "boot-1",
                      "version": "test"}}
    body.update(overrides)
    return body


def post(url: str, body: bytes | dict[str, Any], token: str | None = TOKEN) -> httpx.Response:
    """POST to /v1/ingest; a dict body is packed with MessagePack."""
    content = msgpack.packb(body) if isinstance(body, dict) else body
    headers = {"Content-Type": "application/msgpack"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{url}/v1/ingest", content=content, headers=headers, timeout=60)


def row_counts(location: str) -> dict[str, int]:
    """Rows per table of the store (every table of schema.py)."""
    with open_store(location, migrate=False) as store, store.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in schema.metadata.tables.items()}


# -- stores --------------------------------------------------------------------------------------

def new_pg_database(cluster: PgCluster) -> str:
    """A fresh, empty database in `cluster`; returns its postgresql:// URL."""
    name = f"pgw_{uuid.uuid4().hex[:12]}"
    cluster.psql(f"CREATE DATABASE {name}")
    return f"postgresql://{cluster.superuser}@127.0.0.1:{cluster.port}/{name}"


STORE_KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)]


def new_store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """For a fixture parametrized with STORE_KINDS: a store that does not exist yet, a SQLite
    path or an empty PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store" / "collector.db")
    return new_pg_database(request.getfixturevalue("pg_cluster"))


@pytest.fixture(params=STORE_KINDS)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return new_store_location(request, tmp_path)


# -- the collector process -----------------------------------------------------------------------

def hermetic_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without the user's pgwarden settings (an empty config file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGWARDEN_")}
    config = tmp_path / "empty-config.toml"
    config.touch()
    env["PGWARDEN_CONFIG"] = str(config)
    env.update(extra)
    return env


class CollectorProcess:
    """`pgwarden collector run` as a subprocess; `url` once started, `stderr()` any time."""

    def __init__(self, store: str, workdir: Path, *, port: int = 0, token: str | None = TOKEN,
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.store, self.port, self.token, self.args = store, port, token, args
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = env if env is not None else hermetic_env(workdir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.status_line = ""

    def command(self) -> list[str]:
        cmd = [PGWARDEN, "collector", "run", "--listen", f"127.0.0.1:{self.port}",
               "--store", self.store, *self.args]
        return cmd + (["--token", self.token] if self.token is not None else [])

    def start(self) -> CollectorProcess:
        out, err = self.workdir / "collector.out", self.workdir / "collector.err"
        with open(out, "ab") as o, open(err, "ab") as e:
            start_at = out.stat().st_size
            self.proc = subprocess.Popen(self.command(), stdout=o, stderr=e, env=self.env)

        def started() -> str | None:
            text = out.read_bytes()[start_at:].decode()
            if "\n" in text:
                return text.splitlines()[0]
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"collector exited {self.proc.returncode}: {self.stderr()}")
            return None

        line = wait_for(started, timeout=60)
        assert line, f"collector printed no status line; stderr: {self.stderr()}"
        self.status_line = line
        match = re.search(r"listening on (http://\S+?),", line)
        assert match, line
        self.url = match.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def stderr(self) -> str:
        path = self.workdir / "collector.err"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def collector(store_location: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    """A running collector on a fresh store (SQLite and PostgreSQL)."""
    proc = CollectorProcess(store_location, tmp_path / "collector").start()
    yield proc
    proc.stop()


# -- tests of the command ------------------------------------------------------------------------

def test_status_line_names_address_store_and_schema(collector: CollectorProcess) -> None:
    line = collector.status_line
    assert line.startswith(f"pgwarden collector listening on http://127.0.0.1:{collector.port}")
    kind = "postgresql" if collector.store.startswith("postgresql") else "sqlite"
    latest = migrations.LATEST_VERSION
    assert f"store {kind} " in line and line.endswith(f"schema version {latest}")
    health = httpx.get(f"{collector.url}/v1/health", timeout=30).json()
    assert health == {"status": "ok", "schema_version": latest, "store": kind}


def test_sigterm_and_sigint_stop_cleanly(tmp_path: Path) -> None:
    store = str(tmp_path / "c.db")
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = CollectorProcess(store, tmp_path / f"run-{sig}").start()
        response = post(proc.url, batch([statement("s1", sig, BASE_US + sig)], seq=sig))
        assert response.status_code == 200
        assert proc.stop(sig) == 0
        assert "stopped" in proc.stderr()
    assert row_counts(store)["statements"] == 2


def test_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    proc = subprocess.run([PGWARDEN, "collector", "run", "--store", str(tmp_path / "c.db"),
                           "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                          env=hermetic_env(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert "no ingest token" in proc.stderr and "PGWARDEN_TOKEN" in proc.stderr
    assert not (tmp_path / "c.db").exists()


def test_token_from_environment_and_settings_from_config_file(tmp_path: Path) -> None:
    env = hermetic_env(tmp_path, PGWARDEN_TOKEN="from-env")
    proc = CollectorProcess(str(tmp_path / "c.db"), tmp_path / "env", token=None, env=env).start()
    try:
        assert post(proc.url, batch([]), token="from-env").status_code == 200
        assert post(proc.url, batch([], seq=2), token=TOKEN).status_code == 401
    finally:
        assert proc.stop() == 0

    config = tmp_path / "pgwarden.toml"
    store = tmp_path / "from-config.db"
    config.write_text(f'[collector]\nstore = "{store}"\ntoken = "from-config"\n'
                      'listen = "127.0.0.1:0"\n')
    env = hermetic_env(tmp_path, PGWARDEN_CONFIG=str(config))
    out = tmp_path / "config.out"
    with open(out, "wb") as o:
        p = subprocess.Popen([PGWARDEN, "collector", "run"], stdout=o, stderr=subprocess.DEVNULL,
                             env=env)
    try:
        line = wait_for(lambda: out.read_text().strip(), timeout=60)
        assert f"store sqlite {store}" in line
        url = re.search(r"(http://\S+?),", line).group(1)  # type: ignore[union-attr]
        assert post(url, batch([]), token="from-config").status_code == 200
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0


def test_refused_requests_are_logged_with_reason(collector: CollectorProcess) -> None:
    assert post(collector.url, batch([]), token="nope").status_code == 401
    assert post(collector.url, b"\xc1").status_code == 400
    log = wait_for(lambda: "400" in collector.stderr() and collector.stderr(), timeout=30)
    lines = [line for line in log.splitlines() if "rejected POST /v1/ingest" in line]
    assert len(lines) == 2
    assert "401 wrong bearer token" in lines[0]
    assert "400 body is not valid MessagePack" in lines[1]
    assert "from 127.0.0.1:" in lines[0]


def test_address_in_use_is_a_clear_error(tmp_path: Path) -> None:
    first = CollectorProcess(str(tmp_path / "a.db"), tmp_path / "a").start()
    try:
        proc = subprocess.run([PGWARDEN, "collector", "run", "--listen",
                               f"127.0.0.1:{first.port}", "--store", str(tmp_path / "b.db"),
                               "--token", TOKEN], capture_output=True, text=True,
                              env=hermetic_env(tmp_path), timeout=60)
        assert proc.returncode == 1
        assert f"cannot listen on 127.0.0.1:{first.port}" in proc.stderr
    finally:
        first.stop()


def test_bad_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([PGWARDEN, "collector", "run", "--listen", "localhost",
                           "--store", str(tmp_path / "c.db"), "--token", TOKEN],
                          capture_output=True, text=True, env=hermetic_env(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert "HOST:PORT" in proc.stderr


def test_help_reads_like_a_man_page() -> None:
    out = subprocess.run([PGWARDEN, "collector", "run", "--help"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    for needle in ("--listen", "--store", "--token", "PGWARDEN_TOKEN", "Exit status",
                   "Examples", "413", "422", "SIGTERM", "postgresql://"):
        assert needle in out

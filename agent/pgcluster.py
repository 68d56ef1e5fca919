"""Throwaway PostgreSQL 15 clusters for the demo, the tests and the benchmarks.

A cluster lives in one directory (data, unix socket, server log, TLS key pair), listens on
127.0.0.1 at a free port and on a unix socket in that directory, trusts local connections, and
is removed by `destroy()`. When run as root, the server runs as the `postgres` OS user (initdb
refuses root). Binaries come from Debian's postgresql-15 (`/usr/lib/postgresql/15/bin`).

Raises `ClusterError` (with the server log's tail) when initdb or the server fails to start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path(os.environ.get("PGWARDEN_PG_BIN", "/usr/lib/postgresql/15/bin"))


class ClusterError(RuntimeError):
    """initdb, start or stop of a throwaway cluster failed; the message carries the log tail."""


def make_workdir(prefix: str) -> Path:
    """A new temporary directory the server's OS user can traverse (mkdtemp makes it 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    """One throwaway cluster. `settings` are appended to postgresql.conf (name -> SQL literal)."""

    base_dir: Path
    port: int = field(default_factory=free_port)
    settings: dict[str, str] = field(default_factory=dict)
    ssl: bool = False
    superuser: str = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def postmaster_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])

    # -- lifecycle ---------------------------------------------------------------------------

    def init(self) -> "PgCluster":
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        self._chown(self.base_dir)
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                   "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "fsync": "off",
            "max_connections": "200",
        }
        if self.ssl:
            self._make_certificate()
            conf.update({"ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"})
        conf.update(self.settings)
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# pgwarden throwaway cluster\n")
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        with open(self.data_dir / "pg_hba.conf", "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        return self

    def start(self) -> "PgCluster":
        if not (self.data_dir / "PG_VERSION").exists():
            self.init()
        try:
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                       "-w", "-t", "60", "start"])
        except ClusterError as e:
            raise ClusterError(f"{e}\n--- server log ---\n{self.log_tail()}") from None
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- clients -----------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", user: str | None = None, via: str = "tcp",
            **extra: str) -> str:
        """A libpq connection string: via="tcp" (127.0.0.1) or via="unix" (the socket dir)."""
        host = "127.0.0.1" if via == "tcp" else str(self.socket_dir)
        parts = {"host": host, "port": str(self.port), "dbname": dbname,
                 "user": user or self.superuser, **extra}
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def psql(self, sql: str, dbname: str = "postgres", user: str | None = None,
             via: str = "unix", check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run `psql -X -A -t -c SQL` (simple protocol) and return the completed process."""
        cmd = [str(PG_BIN / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
               "-d", self.dsn(dbname, user, via, **extra), "-c", sql]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=300)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    # -- internals ---------------------------------------------------------------------------

    def _make_certificate(self) -> None:
        self._run(["openssl", "req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=localhost",
                   "-keyout", str(self.data_dir / "server.key"), "-out", str(self.data_dir / "server.crt")])
        os.chmod(self.data_dir / "server.key", 0o600)

    def _as_server_user(self) -> bool:
        return os.geteuid() == 0

    def _chown(self, path: Path) -> None:
        if self._as_server_user():
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run(self, cmd: list[str]) -> None:
        if self._as_server_user():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")
        if p.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `predicate()` until it returns a truthy value or `timeout` seconds pass; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)

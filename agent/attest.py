"""Attest each backend's client to the database, so policies can depend on *which program*
is connected (docs/identity.md).

The capture loop calls `Attestor.submit` when it decodes a session's StartupMessage; a
background thread keeps one connection per database as role ``pgwarden_agent`` and calls
``pgwarden.attest(pid, backend_start, identity)``, which checks that the backend is alive with
that start time and returns the masking decision (handed to `on_result`, for the capture link).
`submit` never blocks and never raises: when the queue is full, a database is down or the
extension is missing, the registration is dropped and counted (the session stays
"unattested", which policies treat strictly: fail closed). A backend the database does not list
yet (the StartupMessage is seen before authentication completes) is tried again, 10 ms, 20 ms,
... about 5 s in all.

The identity sent is the client process as the capture saw it (pid, uid, user, exe, cmdline,
systemd_unit, container_id, ...) plus ``service``: the name of the first `ServiceRule` that
matches, from the configuration file::

    [identity]
    attest_dsn = "host=/var/run/postgresql user=pgwarden_agent dbname={database}"

    [[identity.services]]
    name = "ai-agent"
    exe = "/usr/bin/python3*"        # glob on the executable path
    cmdline = "-m my_ai_agent"       # regular expression, searched in the command line

    [[identity.services]]
    name = "billing"
    unit = "billing.service"         # glob on the systemd unit

Matchers of one rule must all match (``exe``, ``cmdline``, ``unit``, ``container``, ``user``,
``uid``); rules are tried in file order and the first match wins. Without a match, the
database names the session by its unit, container or executable (``unit:billing.service``,
``container:<id>``, ``exe:/usr/bin/psql``).
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from agent.config import Config, ConfigError

log = logging.getLogger("pgwarden.attest")

DEFAULT_DSN = "host=/var/run/postgresql user=pgwarden_agent dbname={database}"
QUEUE_SIZE = 10_000
MAX_AGE_S = 30.0          # a registration older than this is dropped (the backend is long busy)
RETRY_S = 5.0             # after a failed connect, that database's registrations are dropped
NO_EXTENSION_S = 60.0     # for this long, before trying again
# The capture sees the StartupMessage before PostgreSQL lists the backend in pg_stat_activity
# (it does so after authentication): "no live client backend" is retried, 10 ms, 20 ms, ...
# (about 5 s in all) before it counts as refused.
NOT_YET_LISTED = "no live client backend has this pid"
MAX_ATTEMPTS = 9
_RULE_KEYS = ("name", "exe", "cmdline", "unit", "container", "user", "uid")


@dataclass(frozen=True)
class ServiceRule:
    """Maps a client process to a service name; every matcher given must match.

    exe: glob on the executable path; cmdline: regular expression searched in the command
    line (arguments joined by spaces); unit: glob on the systemd unit; container: glob on the
    container id (a prefix such as ``3f2a*`` works); user: glob on the OS user name; uid."""

    name: str
    exe: str | None = None
    cmdline: str | None = None
    unit: str | None = None
    container: str | None = None
    user: str | None = None
    uid: int | None = None
    _cmdline_re: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.cmdline is not None:
            object.__setattr__(self, "_cmdline_re", re.compile(self.cmdline))

    def matches(self, client: Mapping[str, Any]) -> bool:
        def glob(value: Any, pattern: str | None) -> bool:
            return pattern is None or (isinstance(value, str) and fnmatchcase(value, pattern))

        if not (glob(client.get("exe"), self.exe) and glob(client.get("systemd_unit"), self.unit)
                and glob(client.get("container_id"), self.container)
                and glob(client.get("user"), self.user)):
            return False
        if self.uid is not None and client.get("uid") != self.uid:
            return False
        if self._cmdline_re is not None:
            cmdline = client.get("cmdline")
            return isinstance(cmdline, str) and self._cmdline_re.search(cmdline) is not None
        return True


def service_for(rules: Iterable[ServiceRule], client: Mapping[str, Any] | None) -> str | None:
    """The name of the first rule matching `client`, or None."""
    if not client:
        return None
    return next((r.name for r in rules if r.matches(client)), None)


def load_services(cfg: Config) -> list[ServiceRule]:
    """``[[identity.services]]`` of the configuration file; raises ConfigError naming the rule."""
    raw = cfg.get("identity", "services", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{cfg.path}: [[identity.services]] must be an array of tables")
    rules = []
    for i, entry in enumerate(raw, start=1):
        where = f"{cfg.path}: [[identity.services]] #{i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(entry) - set(_RULE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected "
                              f"{', '.join(_RULE_KEYS)}")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(f"{where}: name (the service name policies match) is required")
        for key in ("exe", "cmdline", "unit", "container", "user"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"{where}: {key} must be a string")
        if "uid" in entry and (isinstance(entry["uid"], bool) or not isinstance(entry["uid"], int)):
            raise ConfigError(f"{where}: uid must be an integer")
        if len(entry) == 1:
            raise ConfigError(f"{where}: give at least one of exe, cmdline, unit, container, "
                              "user, uid")
        try:
            rules.append(ServiceRule(**entry))
        except re.error as e:
            raise ConfigError(f"{where}: cmdline is not a valid regular expression: {e}") from None
    return rules


def attest_dsn(cfg: Config) -> str:
    """``[identity] attest_dsn`` (a libpq string with ``{database}``), or the default."""
    value = cfg.get("identity", "attest_dsn", DEFAULT_DSN)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{cfg.path}: [identity] attest_dsn must be a connection string")
    return value


@dataclass(frozen=True)
class AttestResult:
    """What the database answered for one registration: `decision` is pgwarden.attest()'s
    JSON ({attested, reason, identity, session_user, masked, masked_columns}); `latency_s` is
    the time from `submit` to the answer."""

    database: str
    backend_pid: int
    backend_start_us: int
    decision: dict[str, Any]
    latency_s: float


@dataclass
class _Item:
    submitted: float
    database: str
    pid: int
    start_us: int
    identity: dict[str, Any]
    attempts: int = 0


_STOP = object()


class Attestor:
    """Registers backends' clients with the database from a background thread.

    dsn: a libpq connection string for role pgwarden_agent, either with a ``{database}``
    placeholder or without a dbname (the database is added). on_result: called from the
    attestor's thread with each `AttestResult` (keep it short; it must not block).
    """

    def __init__(self, dsn: str, services: Iterable[ServiceRule] = (), *,
                 on_result: Callable[[AttestResult], None] | None = None,
                 queue_size: int = QUEUE_SIZE, max_age_s: float = MAX_AGE_S,
                 retry_s: float = RETRY_S, connect_timeout_s: int = 5) -> None:
        self.dsn = dsn
        self.services = list(services)
        self.on_result = on_result
        self.max_age_s = max_age_s
        self.retry_s = retry_s
        self.connect_timeout_s = connect_timeout_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._conns: dict[str, Any] = {}
        self._down_until: dict[str, float] = {}          # connect failed: retry after
        self._no_extension_until: dict[str, float] = {}  # pgwarden not installed there
        self._lock = threading.Lock()
        self._counts = {k: 0 for k in (
            "submitted", "attested", "refused", "retried", "dropped_full", "dropped_stale",
            "dropped_unavailable", "dropped_no_extension", "failed", "connects",
            "callback_errors")}
        self._retries: list[tuple[float, int, _Item]] = []  # heap: (due, seq, item)
        self._retry_seq = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="pgwarden-attest", daemon=True)
        self._thread.start()

    # -- the caller's side (the capture hot loop) ------------------------------------------------

    def submit(self, database: str, backend_pid: int, backend_start_us: int,
               client: Mapping[str, Any] | None) -> None:
        """Queue a registration; never blocks, never raises (drops and counts instead)."""
        try:
            if self._stopped:
                return
            identity = dict(client) if client else {}
            service = service_for(self.services, client)
            if service is not None:
                identity["service"] = service
            self._queue.put_nowait(_Item(time.monotonic(), database, int(backend_pid),
                                         int(backend_start_us), identity))
            self._count("submitted")
        except queue.Full:
            self._count("dropped_full")
        except Exception:  # never into the capture loop
            self._count("failed")

    def stats(self) -> dict[str, int]:
        """Counters since start, and `queued` (registrations waiting now)."""
        with self._lock:
            out = dict(self._counts)
        out["queued"] = self._queue.qsize() + len(self._retries)
        out["connections"] = len(self._conns)
        return out

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (queued registrations are dropped) and close the connections."""
        if self._stopped:
            return
        self._stopped = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the attestor's thread ------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _run(self) -> None:
        try:
            while True:
                timeout = None
                if self._retries:
                    timeout = max(0.0, self._retries[0][0] - time.monotonic())
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    item = heapq.heappop(self._retries)[2]
                if item is _STOP:
                    return
                try:
                    self._attest(item)
                except Exception as e:  # keep the thread alive whatever happens
                    log.warning("attesting backend %d of %s failed: %s", item.pid,
                                item.database, e)
                    self._count("failed")
        finally:
            for conn in self._conns.values():
                try:
                    conn.close()
                except Exception:
                    pass
            self._conns.clear()

    def _attest(self, item: _Item) -> None:
        import psycopg

        if time.monotonic() - item.submitted > self.max_age_s + (5.0 if item.attempts else 0.0):
            self._count("dropped_stale")
            return
        now = time.monotonic()
        if now < self._no_extension_until.get(item.database, 0.0):
            self._count("dropped_no_extension")
            return
        if now < self._down_until.get(item.database, 0.0):
            self._count("dropped_unavailable")
            return
        for attempt in (1, 2):  # a broken connection is reopened once
            conn = self._connection(item.database)
            if conn is None:
                self._count("dropped_unavailable")
                return
            start = dt.datetime.fromtimestamp(item.start_us / 1e6, dt.UTC)
            try:
                row = conn.execute("SELECT pgwarden.attest(%s, %s, %s::jsonb)",
                                   [item.pid, start, _json(item.identity)]).fetchone()
            except (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName):
                self._no_extension_until[item.database] = time.monotonic() + NO_EXTENSION_S
                self._count("dropped_no_extension")
                return
            except psycopg.OperationalError as e:
                self._drop_connection(item.database)
                if attempt == 2:
                    log.warning("attest in %s: %s", item.database, e)
                    self._count("failed")
                    return
                continue
            except psycopg.Error as e:
                log.warning("attest of backend %d in %s refused: %s", item.pid, item.database,
                            e.diag.message_primary or e)
                self._count("failed")
                return
            decision = row[0] if row else {}
            if decision.get("reason") == NOT_YET_LISTED and item.attempts < MAX_ATTEMPTS:
                item.attempts += 1
                self._retry_seq += 1
                heapq.heappush(self._retries, (time.monotonic() + 0.01 * 2 ** (item.attempts - 1),
                                               self._retry_seq, item))
                self._count("retried")
                return
            self._count("attested" if decision.get("attested") else "refused")
            if self.on_result is not None:
                try:
                    self.on_result(AttestResult(item.database, item.pid, item.start_us,
                                                decision, time.monotonic() - item.submitted))
                except Exception:
                    self._count("callback_errors")
            return

    def _connection(self, database: str) -> Any:
        import psycopg

        conn = self._conns.get(database)
        if conn is not None and not conn.closed:
            return conn
        try:
            conn = psycopg.connect(self._dsn_for(database), autocommit=True,
                                   connect_timeout=self.connect_timeout_s,
                                   application_name="pgwarden attest",
                                   options="-c statement_timeout=5s -c lock_timeout=2s")
        except psycopg.Error as e:
            log.warning("cannot connect to database %s to attest sessions: %s", database,
                        str(e).strip())
            self._down_until[database] = time.monotonic() + self.retry_s
            return None
        self._down_until.pop(database, None)
        self._conns[database] = conn
        self._count("connects")
        return conn

    def _drop_connection(self, database: str) -> None:
        conn = self._conns.pop(database, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _dsn_for(self, database: str) -> str:
        import psycopg

        if "{database}" in self.dsn:
            quoted = "'" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"
            return self.dsn.replace("{database}", quoted)
        return psycopg.conninfo.make_conninfo(self.dsn, dbname=database)


def _json(value: Mapping[str, Any]) -> str:
    import json

    return json.dumps(value, default=str)


__all__ = ["Attestor", "AttestResult", "ServiceRule", "service_for", "load_services",
           "attest_dsn", "DEFAULT_DSN"]

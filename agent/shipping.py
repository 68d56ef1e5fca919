"""Shipping the agent's events to the collector: batching, an on-disk spool, ordered retries.

    shipper = Shipper("http://collector:7400", token, "/var/lib/pgwarden")
    shipper.start()            # replays batches a previous run left in the spool, first
    shipper.submit(event)      # from the capture loop: no I/O, never blocks on the network
    shipper.stop(timeout=10)   # spools what is pending, sends what it can in `timeout`

Two background threads:

- the *batcher* takes pending events every `flush_interval_s` (or as soon as
  `batch_max_events` are waiting), packs them as one batch of docs/events.md (schema 1) with the
  next `batch_seq`, and writes it to `state_dir/spool/` atomically (temp file, fsync, rename)
  *before* anything is sent, so a crash or restart loses nothing that was spooled;
- the *sender* POSTs spool files in strict `batch_seq` order and deletes each after a 2xx
  (including `"duplicate": true`: the collector already had it, e.g. its first response was
  lost). While the collector is unreachable or answers 5xx/408/429, the oldest batch is retried
  with exponential backoff and nothing behind it is sent. 401/403 are retried the same way: the
  batch is fine, the token is not (`last_error` says so). Any other 4xx means the batch can never
  be accepted: it moves to `state_dir/rejected/`, is counted and logged once, and sending goes on.

State in `state_dir`: `agent_id` (a UUID, created once), `batch_seq` (the last sequence number
handed out, written before the batch, so a restarted agent continues and never reuses one),
`spool/`, `rejected/`, and `shipper.lock` (one shipper per state directory).

Nothing is dropped silently: every event not spooled is counted in `stats()["dropped"]` by reason:
`spool_full` (the spool holds `max_spool_bytes`), `queue_full` (more than `max_pending_events`
waiting in memory), `event_too_large` (one event over `max_batch_bytes`), `unserializable`
(not representable in MessagePack), `spool_write_error` (the disk refused the write) and
`stopped` (submitted after `stop()`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack

from agent import __version__

SCHEMA_VERSION = 1
MiB = 1024 * 1024
_SPOOL_NAME = re.compile(r"^(\d{20})-(\d+)\.msgpack$")
_BATCH_OVERHEAD_BYTES = 4096  # the envelope around the events array, generously
_RETRY_STATUSES = frozenset({401, 403, 408, 429})

log = logging.getLogger("pgwarden.shipping")


class ShipperError(RuntimeError):
    """The shipper cannot start: its state directory is unusable or used by another shipper."""


@dataclass(frozen=True)
class _Spooled:
    """One batch file in the spool."""

    seq: int
    path: Path
    size: int
    events: int


class Shipper:
    """Batches submitted events, spools them to disk and delivers them to the collector in order.

    collector_url: the collector's base URL (`http://host:7400`); `/v1/ingest` is appended
        unless the URL already ends with it.
    token: the collector's bearer token.
    state_dir: directory for the agent id, the batch sequence, the spool (created if missing).
    max_spool_bytes: bound of the spool on disk; beyond it new batches are dropped (counted).
    batch_max_events: events per batch at most; a batch is also cut at `max_batch_bytes`.
    flush_interval_s: the longest an event waits in memory before it is spooled.
    max_batch_bytes: MessagePack size of a batch at most (the collector accepts 16 MiB).
    max_pending_events: events waiting in memory at most (default 10 x batch_max_events).
    request_timeout_s: HTTP timeout per request (connect timeout: at most 5 s).
    retry_initial_s, retry_max_s: exponential backoff between retries of the oldest batch.
    agent_info: overrides for the batch's `agent` map (`host`, `boot_id`, `version`).
    """

    def __init__(self, collector_url: str, token: str, state_dir: str | os.PathLike[str], *,
                 max_spool_bytes: int = 256 * MiB, batch_max_events: int = 5000,
                 flush_interval_s: float = 0.5, max_batch_bytes: int = 8 * MiB,
                 max_pending_events: int | None = None, request_timeout_s: float = 10.0,
                 retry_initial_s: float = 0.5, retry_max_s: float = 30.0,
                 agent_info: Mapping[str, str | None] | None = None) -> None:
        if batch_max_events < 1 or max_batch_bytes <= _BATCH_OVERHEAD_BYTES:
            raise ValueError("batch_max_events must be >= 1 and max_batch_bytes > 4096")
        url = collector_url.rstrip("/")
        self.ingest_url = url if url.endswith("/v1/ingest") else f"{url}/v1/ingest"
        self.state_dir = Path(state_dir)
        self._token = token
        self._max_spool_bytes = max_spool_bytes
        self._batch_max_events = batch_max_events
        self._flush_interval_s = flush_interval_s
        self._max_batch_bytes = max_batch_bytes
        self._max_pending = max_pending_events or 10 * batch_max_events
        self._request_timeout_s = request_timeout_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._agent_info = dict(agent_info or {})

        self._spool_dir = self.state_dir / "spool"
        self._rejected_dir = self.state_dir / "rejected"
        self._lock = threading.Lock()
        self._pending_cond = threading.Condition(self._lock)  # submit -> batcher
        self._spool_cond = threading.Condition(self._lock)    # batcher/stop -> sender
        self._abort = threading.Event()
        self._pending: list[dict[str, Any]] = []
        self._spool: deque[_Spooled] = deque()
        self._state = "new"  # new -> running -> stopping -> stopped
        self._batcher_done = False
        self._threads: list[threading.Thread] = []
        self._lock_file: int | None = None
        self._agent: dict[str, Any] = {}
        self._last_seq = 0
        self._counts: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._spool_bytes = 0
        self._last_error: str | None = None
        self._collector_up: bool | None = None

    # -- the hot path ------------------------------------------------------------------------

    def submit(self, event: dict[str, Any]) -> None:
        """Queue one event (a docs/events.md map) for shipping. No I/O; never blocks for long."""
        with self._lock:
            if self._state not in ("new", "running"):
                self._dropped["stopped"] += 1
                return
            if len(self._pending) >= self._max_pending:
                self._dropped["queue_full"] += 1
                return
            self._pending.append(event)
            self._counts["events_submitted"] += 1
            if len(self._pending) == self._batch_max_events:
                self._pending_cond.notify()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load or create the state directory, then start batching and sending.

        Raises ShipperError when the state directory is unusable or locked by another shipper,
        RuntimeError when called twice.
        """
        with self._lock:
            if self._state != "new":
                raise RuntimeError("a Shipper starts once")
        try:
            for directory in (self.state_dir, self._spool_dir, self._rejected_dir):
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_file = self._take_lock()
            self._agent = self._load_agent()
            spooled = self._scan_spool()
            self._last_seq = max([self._read_last_seq(), *(s.seq for s in spooled),
                                  *self._rejected_seqs()])
        except OSError as e:
            self._release_lock()
            raise ShipperError(f"state directory {self.state_dir}: {e.strerror or e}") from None
        with self._lock:
            self._spool.extend(spooled)
            self._spool_bytes = sum(s.size for s in spooled)
            self._state = "running"
        if spooled:
            log.info("replaying %d spooled batch(es) (%d bytes) from a previous run",
                     len(spooled), self._spool_bytes)
        self._threads = [threading.Thread(target=self._batch_loop, name="pgwarden-batcher",
                                          daemon=True),
                         threading.Thread(target=self._send_loop, name="pgwarden-sender",
                                          daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Spool everything pending, send what the collector takes within `timeout` seconds.

        What is not delivered stays in the spool for the next start. Returns after at most
        `timeout` plus one in-flight request; later `submit` calls count as dropped "stopped".
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._state != "running":
                self._state = "stopped"
                return
            self._state = "stopping"
            self._pending_cond.notify_all()
            self._spool_cond.notify_all()
        batcher, sender = self._threads
        batcher.join()  # local disk only; must finish before the lock (and the seq) is released
        sender.join(max(0.0, deadline - time.monotonic()))
        self._abort.set()
        with self._lock:
            self._spool_cond.notify_all()
            self._state = "stopped"
        self._release_lock()

    def stats(self) -> dict[str, Any]:
        """Counters since start (a snapshot; all ints unless noted).

        events_submitted, events_sent (acknowledged by the collector), events_pending (in memory),
        events_rejected, batches_sent, batches_duplicate (acknowledged as already stored),
        batches_rejected (moved to rejected/), spool_batches, spool_bytes, dropped (dict reason ->
        events), last_error (str or None), collector_up (bool, None before the first attempt),
        agent_id (str), last_batch_seq.
        """
        with self._lock:
            return {
                "events_submitted": self._counts["events_submitted"],
                "events_sent": self._counts["events_sent"],
                "events_pending": len(self._pending),
                "events_rejected": self._counts["events_rejected"],
                "batches_sent": self._counts["batches_sent"],
                "batches_duplicate": self._counts["batches_duplicate"],
                "batches_rejected": self._counts["batches_rejected"],
                "spool_batches": len(self._spool),
                "spool_bytes": self._spool_bytes,
                "dropped": dict(self._dropped),
                "last_error": self._last_error,
                "collector_up": self._collector_up,
                "agent_id": self._agent.get("agent_id"),
                "last_batch_seq": self._last_seq,
            }

    # -- the batcher thread ------------------------------------------------------------------

    def _batch_loop(self) -> None:
        size = self._batch_max_events
        while True:
            with self._lock:
                if self._state == "running" and len(self._pending) < size:
                    self._pending_cond.wait(self._flush_interval_s)
                # Swap the list: O(1) under the lock, whatever the backlog.
                taken, self._pending = self._pending, []
                finished = self._state != "running"  # submit() accepts nothing more now
            for start in range(0, len(taken), size):
                events = taken[start:start + size]
                try:
                    self._spool_events(events)
                except Exception:  # never let one batch kill shipping; counted and logged
                    log.exception("could not spool %d events", len(events))
                    self._drop(len(events), "spool_write_error", "internal error while spooling")
            if finished:
                with self._lock:
                    self._batcher_done = True
                    self._spool_cond.notify_all()
                return

    def _spool_events(self, events: list[dict[str, Any]]) -> None:
        packer = msgpack.Packer()
        limit = self._max_batch_bytes - _BATCH_OVERHEAD_BYTES
        try:  # the common case: one C call for the whole batch
            packed = packer.pack(events)
        except (TypeError, ValueError, OverflowError):
            packed = b""
        if packed and len(packed) <= limit:
            self._write_batch(len(events), packed)
            return
        # Something is unserializable or the batch is too big: pack event by event, cut
        # batches at the byte limit and count what cannot be shipped.
        chunk: list[bytes] = []
        size = 0
        for event in events:
            try:
                one = packer.pack(event)
            except (TypeError, ValueError, OverflowError):
                self._drop(1, "unserializable", "an event is not representable in MessagePack")
                continue
            if len(one) > limit:
                self._drop(1, "event_too_large",
                           f"an event of {len(one)} bytes exceeds max_batch_bytes")
                continue
            if chunk and size + len(one) > limit:
                self._write_chunk(packer, chunk)
                chunk, size = [], 0
            chunk.append(one)
            size += len(one)
        if chunk:
            self._write_chunk(packer, chunk)

    def _write_chunk(self, packer: msgpack.Packer, packed: list[bytes]) -> None:
        self._write_batch(len(packed), packer.pack_array_header(len(packed)) + b"".join(packed))

    def _write_batch(self, count: int, packed_events: bytes) -> None:
        """Spool one batch; `packed_events` is the MessagePack array of its `count` events."""
        body_size = len(packed_events) + _BATCH_OVERHEAD_BYTES
        with self._lock:
            full = self._spool_bytes + body_size > self._max_spool_bytes
        if full:
            self._drop(count, "spool_full",
                       f"spool holds {self._spool_bytes} of {self._max_spool_bytes} bytes")
            return
        seq = self._last_seq + 1
        packer = msgpack.Packer()
        # The envelope is packed around the already packed events: a 4-entry map.
        body = b"".join([
            packer.pack_map_header(4),
            packer.pack("schema_version"), packer.pack(SCHEMA_VERSION),
            packer.pack("agent"), packer.pack(self._agent),
            packer.pack("batch_seq"), packer.pack(seq),
            packer.pack("events"), packed_events,
        ])
        path = self._spool_dir / f"{seq:020d}-{count}.msgpack"
        try:
            _write_atomically(self.state_dir / "batch_seq", f"{seq}\n".encode())
            with self._lock:
                self._last_seq = seq
            _write_atomically(path, body)
        except OSError as e:
            self._drop(count, "spool_write_error", f"cannot write {path}: {e.strerror or e}")
            return
        with self._lock:
            self._spool.append(_Spooled(seq, path, len(body), count))
            self._spool_bytes += len(body)
            self._spool_cond.notify_all()

    def _drop(self, count: int, reason: str, detail: str) -> None:
        with self._lock:
            first = self._dropped[reason] == 0
            self._dropped[reason] += count
            self._last_error = f"dropped {count} event(s) ({reason}): {detail}"
        if first:
            log.warning("dropping events (%s): %s; counted in stats()['dropped']", reason, detail)

    # -- the sender thread -------------------------------------------------------------------

    def _send_loop(self) -> None:
        timeout = httpx.Timeout(self._request_timeout_s, connect=min(5.0, self._request_timeout_s))
        headers = {"Authorization": f"Bearer {self._token}",
                   "Content-Type": "application/msgpack"}
        backoff = self._retry_initial_s
        with httpx.Client(timeout=timeout, headers=headers) as client:
            while not self._abort.is_set():
                with self._lock:
                    self._spool_cond.wait_for(lambda: bool(self._spool) or self._batcher_done
                                              or self._abort.is_set())
                    if self._abort.is_set() or not self._spool:
                        return  # aborted, or stopping with nothing left to send
                    entry = self._spool[0]
                    stopping = self._state != "running"
                delay = self._send_one(client, entry)
                if delay is None:
                    backoff = self._retry_initial_s
                    continue
                if stopping:
                    return  # do not wait for the collector at shutdown: the spool keeps it
                with self._lock:
                    self._spool_cond.wait_for(
                        lambda: self._state != "running" or self._abort.is_set(),
                        timeout=max(delay, backoff))
                backoff = min(backoff * 2, self._retry_max_s)

    def _send_one(self, client: httpx.Client, entry: _Spooled) -> float | None:
        """POST the oldest batch; None when it left the spool, else the delay before a retry."""
        try:
            body = entry.path.read_bytes()
        except FileNotFoundError:  # another shipper on this state dir finished it after us
            self._forget(entry)
            return None
        try:
            response = client.post(self.ingest_url, content=body)
        except httpx.HTTPError as e:
            return self._retry_later(f"cannot reach the collector at {self.ingest_url}: "
                                     f"{type(e).__name__}: {e}")
        status = response.status_code
        if 200 <= status < 300:
            duplicate = _json_field(response, "duplicate") is True
            self._forget(entry, sent=True, duplicate=duplicate)
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()
            return None
        reason = _json_field(response, "error") or response.reason_phrase
        if status in _RETRY_STATUSES or status >= 500 or status < 400:
            hint = " (check the agent's token)" if status in (401, 403) else ""
            return self._retry_later(f"collector answered {status}{hint}: {reason}",
                                     _retry_after(response))
        target = self._rejected_dir / entry.path.name
        with contextlib.suppress(FileNotFoundError):
            os.replace(entry.path, target)
        self._forget(entry, rejected=True)
        log.error("collector rejected batch %d (%d events) with %d: %s; moved to %s",
                  entry.seq, entry.events, status, reason, target)
        with self._lock:
            self._last_error = f"batch {entry.seq} rejected with {status}: {reason}"
        return None

    def _retry_later(self, error: str, delay: float = 0.0) -> float:
        with self._lock:
            was_up, self._collector_up = self._collector_up, False
            self._last_error = error
            spooled = len(self._spool)
        if was_up is not False:
            log.warning("%s; keeping %d batch(es) spooled and retrying", error, spooled)
        return min(delay, self._retry_max_s)

    def _forget(self, entry: _Spooled, *, sent: bool = False, duplicate: bool = False,
                rejected: bool = False) -> None:
        with self._lock:
            if self._spool and self._spool[0] is entry:
                self._spool.popleft()
                self._spool_bytes -= entry.size
            if sent:
                if self._collector_up is False:
                    log.info("collector reachable again; %d batch(es) left to send",
                             len(self._spool))
                self._collector_up = True
                self._counts["batches_sent"] += 1
                self._counts["events_sent"] += entry.events
                self._counts["batches_duplicate"] += duplicate
            if rejected:
                self._collector_up = True
                self._counts["batches_rejected"] += 1
                self._counts["events_rejected"] += entry.events

    # -- state directory ---------------------------------------------------------------------

    def _take_lock(self) -> int:
        fd = os.open(self.state_dir / "shipper.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ShipperError(f"state directory {self.state_dir} is used by another running "
                               "shipper (shipper.lock is held)") from None
        return fd

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)  # closing releases the flock
            self._lock_file = None

    def _load_agent(self) -> dict[str, Any]:
        path = self.state_dir / "agent_id"
        try:
            agent_id = str(uuid.UUID(path.read_text().strip()))
        except FileNotFoundError:
            agent_id = str(uuid.uuid4())
            _write_atomically(path, f"{agent_id}\n".encode())
        except ValueError:
            raise ShipperError(f"{path} does not hold a UUID; fix or remove it "
                               "(a new id makes the collector see a new agent)") from None
        info = {"agent_id": agent_id, "host": socket.gethostname(), "boot_id": _boot_id(),
                "version": __version__}
        info.update((k, v) for k, v in self._agent_info.items() if k in ("host", "boot_id",
                                                                          "version"))
        return info

    def _read_last_seq(self) -> int:
        try:
            return int((self.state_dir / "batch_seq").read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            raise ShipperError(f"{self.state_dir / 'batch_seq'} does not hold an integer") from None

    def _scan_spool(self) -> list[_Spooled]:
        found = []
        for path in self._spool_dir.iterdir():
            match = _SPOOL_NAME.match(path.name)
            if match:
                found.append(_Spooled(int(match[1]), path, path.stat().st_size, int(match[2])))
            elif path.name.endswith(".tmp"):
                path.unlink()  # a write interrupted before its rename: never acknowledged
        return sorted(found, key=lambda s: s.seq)

    def _rejected_seqs(self) -> list[int]:
        return [int(m[1]) for p in self._rejected_dir.iterdir()
                if (m := _SPOOL_NAME.match(p.name))]


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _json_field(response: httpx.Response, key: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get(key) if isinstance(body, dict) else None


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else 0.0

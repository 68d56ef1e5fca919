"""The capture loop: probe rings -> per-backend decoders -> events.

Each `poll()`:
1. drains the control ring (postmasters, backend starts and exits, client connects), so every
   backend's session exists before its bytes are decoded;
2. drains the data ring in one pass, feeding each chunk to its backend's decoder (no object is
   built per chunk; bytes are referenced in the mapped ring until the pass ends);
3. collects the decoders' records as events, and ends the sessions of exited backends.

The kernel wakes the agent only for lifecycle events; data is collected every `interval_s`
(the data ring holds seconds of traffic), which keeps wakeups off the database's hot path.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent import discovery
from agent.attest import AttestResult, Attestor
from agent.events import DATA_HEADER, DATA_HEADER_SIZE, CtlEvent, CtlKind
from agent.identity import ClientTracker, describe_process
from agent.probes import Probes
from agent.redact import Redactor
from agent.session import CapturedSession, Clock, SessionFacts, session_id

log = logging.getLogger("pgwarden.agent")

PREEXISTING_GEN = 2  # kernel generations are odd; user-space ones even
RESCAN_INTERVAL_S = 2.0
FULL_SCAN_INTERVAL_S = 30.0
MAX_ATTESTING = 100_000  # attestations awaiting the database's answer


def make_clock() -> Clock:
    wall = time.time_ns()
    return Clock(wall - time.monotonic_ns(), wall - time.clock_gettime_ns(time.CLOCK_BOOTTIME))


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown-boot"


@dataclass
class CaptureCounters:
    sessions: int = 0
    statements: int = 0
    events: int = 0
    gaps: int = 0
    unmatched_records: int = 0  # data of a backend the agent never heard of
    by_type: dict[str, int] = field(default_factory=dict)


class Capture:
    """Owns the probes' rings and the sessions of every tracked backend.

    emit: called with each event (docs/events.md) in capture order; it must not block.
    capture_raw: ship statement text verbatim and bind values (default: normalized, no values).
    only_ports: capture only the servers listening on one of these TCP ports (empty: all).
    attestor: when given, every session's client is attested to its database
    (agent.attest, issue 4) and the database's answer is emitted as `session.attested`.
    """

    def __init__(self, probes: Probes, emit: Callable[[dict[str, Any]], None], *,
                 capture_raw: bool = False, redactor: Redactor | None = None,
                 only_ports: frozenset[int] = frozenset(),
                 attestor: Attestor | None = None) -> None:
        self.probes = probes
        self.only_ports = only_ports
        self.attestor = attestor
        # (backend pid, backend start µs) -> session id, until the database answers
        self._attesting: dict[tuple[int, int], str] = {}
        self._attest_results: queue.SimpleQueue[AttestResult] = queue.SimpleQueue()
        if attestor is not None:
            attestor.on_result = self._attest_results.put  # called in the attestor's thread
        self._emit_sink = emit
        self.capture_raw = capture_raw
        self.redactor = redactor or Redactor()
        self.clock = make_clock()
        self.boot_id = boot_id()
        self.hz = os.sysconf("SC_CLK_TCK")
        self.tracker = ClientTracker()
        self.sessions: dict[int, CapturedSession] = {}
        self.postmasters: dict[int, tuple[int, ...]] = {}  # pid -> TCP ports
        self.candidates: set[int] = set()  # postgres processes not (yet) wanted: ports unknown
        self.counters = CaptureCounters()
        self._exited: list[tuple[CapturedSession, int]] = []
        self._epoll = select.epoll()
        self._epoll.register(probes.ctl_ring.map_fd, select.EPOLLIN)
        self._last_rescan = self._last_full_scan = time.monotonic()

    # -- events ------------------------------------------------------------------------------

    def _emit(self, event: dict[str, Any]) -> None:
        c = self.counters
        c.events += 1
        kind = event["type"]
        c.by_type[kind] = c.by_type.get(kind, 0) + 1
        if kind == "statement.executed":
            c.statements += 1
        elif kind == "session.started":
            c.sessions += 1
            if self.attestor is not None and event["database"] is not None:
                if len(self._attesting) >= MAX_ATTESTING:  # answers lost (dropped, db down)
                    self._attesting.clear()
                self._attesting[(event["backend_pid"], event["backend_start_us"])] = event["session_id"]
                self.attestor.submit(event["database"], event["backend_pid"],
                                     event["backend_start_us"], event["client"])
        elif kind == "capture.gap":
            c.gaps += 1
        self._emit_sink(event)

    # -- discovery ---------------------------------------------------------------------------

    def attach_running(self) -> list[discovery.Postmaster]:
        """Track every running postmaster and its existing backends (marked mid-session)."""
        found = [pm for pm in discovery.find_postmasters() if self._wanted(pm.ports)]
        for pm in found:
            self._add_postmaster(pm.pid, pm.exe, pm.ports)
        # After the postmasters are in the kernel's map: a backend forked from now on is tracked
        # from its fork (a BACKEND_START is on its way); only older ones join mid-session.
        tracked = self.probes.backend_pids()
        joined = [be for pm in found for be in discovery.find_backends(pm.pid)
                  if be.pid not in self.sessions and be.pid not in tracked]
        if joined:
            self.probes.watch_joined(True)  # before flagging them: their first read is pending
        for be in joined:
            self._attach_existing_backend(be, self.postmasters.get(be.postmaster_pid, ()))
        self._last_rescan = time.monotonic()
        return found

    def _wanted(self, ports: tuple[int, ...]) -> bool:
        return not self.only_ports or bool(self.only_ports.intersection(ports))

    def _add_postmaster(self, pid: int, exe: str, ports: tuple[int, ...]) -> None:
        self.probes.add_postmaster(pid)
        if self.probes.mode == "secure_rw":
            self.probes.attach_binary(exe)
        if self.postmasters.get(pid) != ports:
            self.postmasters[pid] = ports
            self.probes.set_ports({p for ps in self.postmasters.values() for p in ps})

    def _attach_existing_backend(self, be: discovery.ExistingBackend, ports: tuple[int, ...]) -> None:
        self.probes.add_backend(be.pid, PREEXISTING_GEN, be.fd)
        client, source = None, None
        if be.peer_addr is None:
            client, source = self.tracker.for_backend(be.pid, be.fd, socket.AF_UNIX, None, 0, ports)
        elif be.peer_port is not None:
            owner = discovery.tcp_socket_owner(be.peer_addr, be.peer_port)
            if owner is not None:
                client, source = describe_process(owner), "proc_scan"
        facts = SessionFacts(
            pid=be.pid, gen=PREEXISTING_GEN,
            session_id=session_id(self.boot_id, be.pid, be.start_ticks),
            backend_start_us=self.clock.boot_us(be.start_ticks * 1_000_000_000 // self.hz),
            transport="unix" if be.peer_addr is None else "tcp",
            client_addr=be.peer_addr, client_port=be.peer_port, client=client, identity_source=source,
            capture_source=self.probes.mode, mid_session=True, user=be.user, database=be.database)
        s = CapturedSession(facts, self._emit, self.redactor, self.clock, self.capture_raw)
        self.sessions[be.pid] = s
        s.attach_mid_session(time.monotonic_ns())

    def _rescan(self) -> None:
        """Safety net for what the probes cannot see: ports opened after exec (a postmaster
        listens only after start-up), exited postmasters; every FULL_SCAN_INTERVAL_S, the whole
        of /proc (reading every process's name is not free on a busy host)."""
        now = time.monotonic()
        full = now - self._last_full_scan > FULL_SCAN_INTERVAL_S
        if full:
            self._last_full_scan = now
            self.candidates.update(pm.pid for pm in discovery.find_postmasters()
                                   if pm.pid not in self.postmasters)
        for pid in set(self.postmasters) | self.candidates:
            if not os.path.exists(f"/proc/{pid}"):
                self.postmasters.pop(pid, None)
                self.candidates.discard(pid)
                continue
            if pid not in self.candidates and not full:
                continue  # a postmaster's ports are set at start-up: re-read on full scans only
            ports = discovery.listen_ports(pid)
            if self._wanted(ports) and (pid in self.candidates or self.postmasters[pid] != ports):
                self.candidates.discard(pid)
                self._add_postmaster(pid, f"/proc/{pid}/exe", ports)
        if not self.probes.joined_backends():
            self.probes.watch_joined(False)
        self.clock = make_clock()
        for s in self.sessions.values():
            s.clock = self.clock
        self._last_rescan = now

    # -- the loop ----------------------------------------------------------------------------

    def poll(self, interval_s: float = 0.02) -> None:
        """Wait up to interval_s for lifecycle events, then collect everything available."""
        self._epoll.poll(interval_s)
        self.flush()
        if time.monotonic() - self._last_rescan > RESCAN_INTERVAL_S:
            self._rescan()

    def flush(self) -> None:
        """Collect everything the rings hold now and end sessions of exited backends."""
        self._drain_ctl()
        self._drain_data()
        self._finish_exited()
        self._drain_attested()

    def close(self) -> None:
        self._epoll.close()

    def _drain_attested(self) -> None:
        """Emit what the databases answered to the attestations (docs/events.md)."""
        while not self._attest_results.empty():
            r = self._attest_results.get()
            sid = self._attesting.pop((r.backend_pid, r.backend_start_us), None)
            if sid is None:
                continue
            d = r.decision
            event = {"type": "session.attested", "ts_us": time.time_ns() // 1000, "session_id": sid,
                     "attested": bool(d.get("attested")), "masked": bool(d.get("masked"))}
            for key in ("identity", "session_user", "masked_columns", "reason"):
                if d.get(key) is not None:
                    event[key] = d[key]
            self._emit(event)

    def _drain_ctl(self) -> None:
        ring = self.probes.ctl_ring
        data = ring.data
        for off, length in ring.records():
            try:
                ev = CtlEvent.decode(data[off:off + length])
            except ValueError:
                log.warning("undecodable control record of %d bytes skipped", length)
                continue
            self._on_ctl(ev)
        ring.commit()

    def _on_ctl(self, ev: CtlEvent) -> None:
        if ev.kind is CtlKind.BACKEND_START:
            self._on_backend_start(ev)
        elif ev.kind is CtlKind.BACKEND_EXIT:
            s = self.sessions.get(ev.tgid)
            if s is not None and s.facts.gen == ev.gen:
                self._exited.append((s, ev.ts_ns))
        elif ev.kind is CtlKind.TCP_CONNECT:
            self.tracker.seen_tcp(ev)
        elif ev.kind is CtlKind.UNIX_CONNECT:
            self.tracker.seen_unix(ev)
        elif ev.kind is CtlKind.POSTMASTER_EXEC and self.only_ports:
            # The kernel tracks every new postgres at exec; with a port filter, only once a
            # rescan sees it listen on a wanted port (connections before that are not captured).
            self.probes.remove_postmaster(ev.tgid)
            self.candidates.add(ev.tgid)
        elif ev.kind is CtlKind.POSTMASTER_EXEC:
            exe = f"/proc/{ev.tgid}/exe"
            try:
                self._add_postmaster(ev.tgid, exe, self.postmasters.get(ev.tgid, ()))
            except FileNotFoundError:  # short-lived: `postgres -C`, initdb's bootstrap
                log.debug("postgres process %d exited before it could be attached", ev.tgid)
            except Exception as e:  # attach failure must not stop capture of other servers
                log.warning("postmaster %d (%s): %s", ev.tgid, ev.exe, e)
        elif ev.kind is CtlKind.POSTMASTER_EXIT:
            self.postmasters.pop(ev.tgid, None)
            self.candidates.discard(ev.tgid)

    def _on_backend_start(self, ev: CtlEvent) -> None:
        old = self.sessions.get(ev.tgid)
        if old is not None:  # pid reused and its exit was lost: end the old one first
            self._exited.append((old, ev.ts_ns))
            self._finish_exited()
        ticks = discovery.start_ticks(ev.tgid)
        if ticks is None:  # already gone: the fork time is the start time
            ticks = ev.boot_ns * self.hz // 1_000_000_000
        ports = self.postmasters.get(ev.ptgid, ())
        client, source = self.tracker.for_backend(ev.tgid, ev.fd, ev.family, ev.local_addr,
                                                  ev.local_port, ports)
        facts = SessionFacts(
            pid=ev.tgid, gen=ev.gen, session_id=session_id(self.boot_id, ev.tgid, ticks),
            backend_start_us=self.clock.boot_us(ev.boot_ns),
            transport="unix" if ev.family == socket.AF_UNIX else "tcp",
            client_addr=ev.local_addr, client_port=ev.local_port or None, client=client,
            identity_source=source, capture_source=self.probes.mode)
        self.sessions[ev.tgid] = CapturedSession(facts, self._emit, self.redactor, self.clock,
                                                 self.capture_raw)

    def _drain_data(self) -> None:
        ring = self.probes.data_ring
        data = ring.data
        unpack = DATA_HEADER.unpack_from
        sessions = self.sessions
        touched: set[CapturedSession] = set()
        for off, _length in ring.records():
            ts_ns, pos, tgid, gen, n, direction, _source, _flags = unpack(data, off)
            s = sessions.get(tgid)
            if s is None or s.facts.gen != gen:
                self._drain_ctl()  # its BACKEND_START may be behind in the other ring
                s = sessions.get(tgid)
                if s is None or s.facts.gen != gen:
                    self.counters.unmatched_records += 1
                    continue
            start = off + DATA_HEADER_SIZE
            s.conn.feed(direction, pos, data[start:start + n], ts_ns)
            touched.add(s)
        for s in touched:
            s.drain()
        ring.commit()

    def _finish_exited(self) -> None:
        for s, ts_ns in self._exited:
            s.close(ts_ns)
            if self.sessions.get(s.facts.pid) is s:
                del self.sessions[s.facts.pid]
        self._exited.clear()

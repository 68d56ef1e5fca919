"""`pgwarden agent run` as a library: probes + capture loop + shipping + status file.

The status file (`<state_dir>/status.json`, rewritten atomically every second) is how
`pgwarden agent status` reads a running agent's counters without talking to it.
"""

from __future__ import annotations

import gc
import glob
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__, discovery
from agent.attest import Attestor, ServiceRule
from agent.capture import Capture
from agent.events import STAT_NAMES
from agent.probes import Probes, ProbeError
from agent.shipping import Shipper

log = logging.getLogger("pgwarden.agent")

STATUS_FILE = "status.json"
STATS_EVENT_INTERVAL_S = 10.0
DEFAULT_BINARIES = "/usr/lib/postgresql/*/bin/postgres"


@dataclass(frozen=True)
class AgentOptions:
    collector: str
    token: str
    state_dir: Path
    mode: str = "auto"  # auto | secure_rw | syscall
    capture_raw: bool = False
    data_ring_pages: int = 16384  # 64 MiB
    spool_max_bytes: int = 256 * 1024 * 1024
    poll_interval_s: float = 0.02
    only_ports: frozenset[int] = frozenset()  # capture only servers listening on these ports
    attest_dsn: str | None = None  # attest clients to the databases (agent.attest); None: off
    services: tuple[ServiceRule, ...] = ()


def choose_mode(requested: str) -> tuple[str, str]:
    """(mode, reason). auto = secure_rw when every postgres binary found exports the symbols."""
    if requested != "auto":
        return requested, "requested"
    binaries = [pm.exe for pm in discovery.find_postmasters()] or glob.glob(DEFAULT_BINARIES)
    # a postmaster that exited meanwhile tells nothing (its /proc/PID/exe is gone)
    lacking = [b for b in binaries if not Probes.has_secure_rw(b) and os.path.exists(b)]
    if lacking:
        return "syscall", f"fallback: {', '.join(lacking)} lack secure_read/secure_write symbols"
    return "secure_rw", "postgres exports secure_read/secure_write"


def kernel_drops(kernel: dict[str, int]) -> dict[str, int]:
    return {name[5:]: kernel[name] for name in STAT_NAMES if name.startswith("drop_")}


class Agent:
    """One running agent. `start()` prints nothing; `status_line()` says what it attached to."""

    def __init__(self, opts: AgentOptions) -> None:
        self.opts = opts
        self.mode, self.mode_reason = choose_mode(opts.mode)
        self.probes = Probes(self.mode, opts.data_ring_pages)
        self.shipper = Shipper(opts.collector, opts.token, opts.state_dir,
                               max_spool_bytes=opts.spool_max_bytes)
        self.capture: Capture | None = None
        self.attestor: Attestor | None = None
        self.started_at = time.time()
        self.postmasters: list[discovery.Postmaster] = []
        self._stop = threading.Event()

    def start(self) -> None:
        self.opts.state_dir.mkdir(parents=True, exist_ok=True)
        self.probes.load()
        self.shipper.start()
        if self.opts.attest_dsn is not None:
            self.attestor = Attestor(self.opts.attest_dsn, self.opts.services)
        self.capture = Capture(self.probes, self.shipper.submit, capture_raw=self.opts.capture_raw,
                               only_ports=self.opts.only_ports, attestor=self.attestor)
        self.postmasters = self.capture.attach_running()
        self._write_status()
        # What start-up allocated lives as long as the agent: keep it out of every collection,
        # and collect young objects less often (capture creates many short-lived, acyclic ones).
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)

    def status_line(self) -> str:
        hooks = ("uprobe+uretprobe on secure_read/secure_write" if self.mode == "secure_rw"
                 else "tracepoints on recvfrom/sendto (fallback)")
        servers = ", ".join(f"postmaster {pm.pid} (ports {','.join(map(str, pm.ports)) or 'unix only'})"
                            for pm in self.postmasters) or "no postmaster yet (waiting for one to start)"
        attest = (f"; attesting clients to each database as {self.opts.attest_dsn!r} "
                  f"({len(self.opts.services)} service rule(s))" if self.attestor else "")
        mid = sum(1 for s in self.capture.sessions.values() if s.facts.mid_session) if self.capture else 0
        return (f"pgwarden agent {__version__}: capturing {servers}; hooks: {hooks} "
                f"[{self.mode_reason}]; {mid} running backend(s) attached mid-session; "
                f"shipping to {self.opts.collector} (spool {self.opts.state_dir}){attest}")

    def run(self) -> None:
        """Capture until `stop()`; then flush, ship what can be shipped, spool the rest."""
        assert self.capture is not None
        last_status = last_stats = time.monotonic()
        reported_drops: dict[str, int] = {}
        try:
            while not self._stop.is_set():
                self.capture.poll(self.opts.poll_interval_s)
                now = time.monotonic()
                if now - last_status >= 1.0:
                    status = self._write_status()
                    self._report_new_drops(status["drops"], reported_drops)
                    last_status = now
                if now - last_stats >= STATS_EVENT_INTERVAL_S:
                    self._emit_stats()
                    last_stats = now
        finally:
            self.capture.flush()
            if self.attestor is not None:
                self.attestor.stop()
            self._emit_stats()
            self.shipper.stop(timeout=10.0)
            self._write_status(running=False)
            self.capture.close()
            self.probes.close()

    def stop(self) -> None:
        self._stop.set()

    # -- status --------------------------------------------------------------------------------

    def status(self, running: bool = True) -> dict[str, Any]:
        kernel = self.probes.stats() if self.probes.loaded else {}
        c = self.capture.counters if self.capture else None
        shipping = self.shipper.stats()
        drops = kernel_drops(kernel) if kernel else {}
        if c is not None:
            drops["unmatched_records"] = c.unmatched_records
        for reason, n in (shipping.get("dropped") or {}).items():
            drops[f"shipping_{reason}"] = n
        return {
            "running": running, "pid": os.getpid(), "version": __version__,
            "started_at": self.started_at, "updated_at": time.time(), "mode": self.mode,
            "mode_reason": self.mode_reason, "collector": self.opts.collector,
            "capture_raw": self.opts.capture_raw,
            "postmasters": sorted(self.capture.postmasters) if self.capture else [],
            "sessions_open": len(self.capture.sessions) if self.capture else 0,
            "counters": {"events": c.events, "statements": c.statements, "sessions": c.sessions,
                         "gaps": c.gaps, "by_type": c.by_type} if c else {},
            "kernel": kernel, "drops": drops, "shipping": shipping,
            "attestation": self.attestor.stats() if self.attestor else None,
        }

    def _write_status(self, running: bool = True) -> dict[str, Any]:
        status = self.status(running)
        path = self.opts.state_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=1))
        tmp.replace(path)
        return status

    def _emit_stats(self) -> None:
        s = self.status()
        self.shipper.submit({
            "type": "agent.stats", "ts_us": time.time_ns() // 1000,
            "events": s["counters"].get("events", 0), "statements": s["counters"].get("statements", 0),
            "sessions": s["counters"].get("sessions", 0), "drops": s["drops"],
            "spool_bytes": s["shipping"].get("spool_bytes", 0),
            "spool_batches": s["shipping"].get("spool_batches", 0)})

    @staticmethod
    def _report_new_drops(drops: dict[str, int], reported: dict[str, int]) -> None:
        for reason, n in drops.items():
            if n > reported.get(reason, 0):
                log.warning("capture loss: %d new '%s' drop(s) (total %d)", n - reported.get(reason, 0),
                            reason, n)
                reported[reason] = n


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The last status a (possibly stopped) agent wrote, or None when there is none."""
    try:
        return json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


__all__ = ["Agent", "AgentOptions", "ProbeError", "read_status", "choose_mode"]

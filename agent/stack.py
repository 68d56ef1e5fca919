"""Run the collector and the agent as real processes (the demo, the tests and the benchmarks).

`CollectorProcess` runs `pgwarden collector run` on a free loopback port; `AgentProcess` runs
`pgwarden agent run` against it and waits until the agent has attached (its status file says
so). Both are stopped with SIGTERM, as an operator would, so the agent flushes and spools.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agent.pgcluster import free_port, wait_for

PGWARDEN = [sys.executable, "-m", "agent.cli"]


class StackError(RuntimeError):
    """A collector or agent process failed to start; the message holds its output."""


@dataclass
class CollectorProcess:
    store: str
    token: str = "test-token"
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "CollectorProcess":
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [*PGWARDEN, "collector", "run", "--listen", f"127.0.0.1:{self.port}",
             "--store", self.store, "--token", self.token], stdout=out, stderr=subprocess.STDOUT)
        import httpx

        def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(f"collector exited with {self.proc.returncode}: {self._log()}")
            try:
                return httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_for(healthy, timeout=30):
            raise StackError(f"collector did not become healthy: {self._log()}")
        return self

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""


@dataclass
class AgentProcess:
    collector_url: str
    state_dir: Path
    token: str = "test-token"
    capture_raw: bool = False
    mode: str = "auto"
    ports: tuple[int, ...] = ()  # --port: capture only these servers
    log_path: Path | None = None
    config_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "AgentProcess":
        status = self.state_dir / "status.json"
        if status.exists():
            status.unlink()
        cmd = [*PGWARDEN, "agent", "run", "--collector", self.collector_url, "--token", self.token,
               "--state-dir", str(self.state_dir), "--mode", self.mode]
        if self.capture_raw:
            cmd.append("--capture-raw")
        for port in self.ports:
            cmd += ["--port", str(port)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

        def attached() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(f"agent exited with {self.proc.returncode}: {self._log()}")
            return status.exists()

        if not wait_for(attached, timeout=120):
            raise StackError(f"agent did not attach: {self._log()}")
        return self

    def status(self) -> dict:  # type: ignore[type-arg]
        return json.loads((self.state_dir / "status.json").read_text())

    def stop(self) -> int | None:
        code = _terminate(self.proc)
        self.proc = None
        return code

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> int | None:
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else None
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait()

"""The foundation: the CLI answers, and a throwaway cluster serves unix, TCP and TLS clients."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.pgcluster import PgCluster


def test_cli_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in ("agent", "collector", "sessions", "statements"):
        assert name in out


@pytest.mark.pg
def test_cluster_serves_unix_tcp_and_tls(pg_cluster: PgCluster) -> None:
    assert pg_cluster.psql("select 40 + 2", via="unix").stdout.strip() == "42"
    assert pg_cluster.psql("select 41 + 1", via="tcp").stdout.strip() == "42"
    tls = pg_cluster.psql("select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                          via="tcp", sslmode="require")
    assert tls.stdout.strip() == "t"

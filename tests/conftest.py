"""Shared fixtures: throwaway PostgreSQL clusters; and the CI rule that a skip is a failure.

Under CI=true a skipped test (missing eBPF capability, missing PostgreSQL) fails the run:
pgwarden's promise is real capture on real servers, so a skip would hide exactly what matters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.db.testing import GuardedCluster
from agent.pgcluster import PgCluster, make_workdir


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") == "true" and skipped:
        reporter.write_line(f"CI=true: {len(skipped)} test(s) skipped; a skip is a failure here",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL 15 cluster for the session: TCP + unix socket + TLS, statement logging on."""
    # Not under pytest's tmp dir: that is 0700 root and the server runs as `postgres`.
    base = make_workdir("pgwarden-test-")
    cluster = PgCluster(base, ssl=True, settings={"log_statement": "'all'"})
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def gc() -> Iterator[GuardedCluster]:
    """A cluster with the extension installed and the test policy (agent.db.testing.TEST_POLICY),
    one per test module."""
    g = GuardedCluster().start()
    yield g
    g.destroy()


@pytest.fixture
def db(gc: GuardedCluster) -> str:
    """A fresh database of `gc` with the seeded schema, for one test."""
    return gc.new_db()

"""Plan, apply and drift-check a policy against a database with the pgwarden extension.

The extension computes the diff and applies it (pgwarden.plan_policy / apply_policy, in one
transaction); this module sends the canonical document, the YAML source, its SHA-256 and the git
commit of the file (when it lives in a git checkout), and shapes the answers.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from agent.db.conn import DbError, connect, server_error
from agent.policy.schema import Policy


def git_commit(path: Path) -> str | None:
    """HEAD of the git checkout holding `path` ("<sha>-dirty" when the file differs from HEAD
    or is untracked), or None outside a checkout or without git."""
    folder = path.resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--",
                                str(path.resolve())], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = head.stdout.strip()
    return f"{sha}-dirty" if dirty.stdout.strip() else sha


def plan(dsn: str, policy: Policy) -> list[dict[str, str]]:
    """The exact changes `apply` would make (nothing is changed)."""
    with connect(dsn) as conn:
        try:
            rows = conn.execute("SELECT change, kind, object, detail"
                                " FROM pgwarden.plan_policy(%s::jsonb)",
                                [json.dumps(policy.doc)]).fetchall()
        except psycopg.Error as e:
            raise DbError(f"planning the policy: {server_error(e)}") from None
    return [dict(zip(("change", "kind", "object", "detail"), r)) for r in rows]


def apply(dsn: str, policy: Policy, commit: str | None) -> dict[str, Any]:
    """Apply atomically; returns {"version", "changes", "ledger_head"}. On any error nothing
    is changed (one transaction)."""
    with connect(dsn, autocommit=False) as conn:
        try:
            result = json.loads(conn.execute(
                "SELECT pgwarden.apply_policy(%s::jsonb, %s, %s, %s)::text",
                [json.dumps(policy.doc), policy.source, policy.sha256, commit]).fetchone()[0])
            conn.commit()
            conn.execute("SELECT pgwarden.chain_pending()")
            conn.commit()
        except psycopg.Error as e:
            conn.rollback()
            raise DbError(f"applying the policy (nothing was changed): {server_error(e)}") \
                from None
    return result


def applied(dsn: str) -> dict[str, Any] | None:
    """The policy in force: version, sha256, git_commit, applied_at, applied_by (or None)."""
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT p.version, p.sha256, p.git_commit, p.applied_at::text, p.applied_by::text"
            " FROM pgwarden.policy p JOIN pgwarden.policy_head h USING (version)").fetchone()
    return dict(zip(("version", "sha256", "git_commit", "applied_at", "applied_by"), row)) \
        if row else None


def drift(dsn: str, policy: Policy | None = None) -> list[dict[str, str]]:
    """Findings from pgwarden.drift(), plus, given the file, whether it differs from the
    policy in force."""
    with connect(dsn) as conn:
        try:
            rows = conn.execute("SELECT severity, kind, object, detail FROM pgwarden.drift()"
                                ).fetchall()
        except psycopg.Error as e:
            raise DbError(f"checking drift: {server_error(e)}") from None
    out = [dict(zip(("severity", "kind", "object", "detail"), r)) for r in rows]
    if policy is not None:
        current = applied(dsn)
        if current is None:
            out.insert(0, {"severity": "high", "kind": "policy_not_applied", "object": "policy",
                           "detail": "no policy has been applied to this database"})
        elif current["sha256"] != policy.sha256:
            out.insert(0, {"severity": "high", "kind": "policy_differs", "object": "policy",
                           "detail": f"the file differs from the policy in force (version "
                                     f"{current['version']}, sha256 {current['sha256'][:12]})"})
    return out

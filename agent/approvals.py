"""Approval requests seen from outside the database: list, show, approve, deny.

The extension does the work (``pgwarden.approval_requests``, ``pgwarden.approve``,
``pgwarden.deny``; pg_extension/python/pgwarden_ext/approvals.py, docs/approvals.md): it checks
who is asking (session_user against the policy's reviewers; a requester never reviews their own
request) and records every step in the ledger. This module adds what only the client knows, the
operating-system user running the command, which is recorded next to the reviewing role as
information (the client says so; the database cannot check it).
"""

from __future__ import annotations

import getpass
import os
from typing import Any

import psycopg

from agent.db.conn import DbError, connect, server_error

STATUSES = ("pending", "approved", "denied", "expired", "used")


def os_user() -> str:
    """The person behind the command: SUDO_USER when run through sudo, else the login."""
    sudo = os.environ.get("SUDO_USER")
    if sudo:
        return sudo
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


def requests(dsn: str, status: str | None = None, request_id: int | None = None
             ) -> list[dict[str, Any]]:
    """Requests, newest first (all of them for reviewers and pgwarden admins, one's own
    otherwise); with `request_id`, that one with its events and deliveries."""
    with connect(dsn) as conn:
        try:
            rows = conn.execute("SELECT r FROM pgwarden.approval_requests(%s, %s) AS r",
                                [status, request_id]).fetchall()
        except psycopg.Error as e:
            raise DbError(f"reading approval requests: {server_error(e)}") from None
    return [r[0] for r in rows]


def show(dsn: str, request_id: int) -> dict[str, Any]:
    found = requests(dsn, None, request_id)
    if not found:
        raise DbError(f"no approval request {request_id} (or not one you may see)")
    return found[0]


def approve(dsn: str, request_id: int, comment: str | None = None) -> dict[str, Any]:
    """Approve as the connecting role (and this OS user): a one-time grant."""
    return _review(dsn, "SELECT pgwarden.approve(%s, %s, %s)", request_id, comment, "approving")


def deny(dsn: str, request_id: int, reason: str) -> dict[str, Any]:
    return _review(dsn, "SELECT pgwarden.deny(%s, %s, %s)", request_id, reason, "denying")


def _review(dsn: str, sql: str, request_id: int, text: str | None,
            what: str) -> dict[str, Any]:
    with connect(dsn) as conn:
        try:
            row = conn.execute(sql, [request_id, text, os_user()]).fetchone()
        except psycopg.Error as e:
            raise DbError(f"{what} request {request_id}: {server_error(e)}") from None
    return dict(row[0])

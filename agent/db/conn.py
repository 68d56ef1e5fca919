"""Connections to PostgreSQL for pgwarden's CLI, with errors that say what went wrong where."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


class DbError(RuntimeError):
    """A database operation failed; the message names the DSN's host/db and the server error."""


def where(dsn: str) -> str:
    """A short description of `dsn` without secrets: user@host:port/dbname."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparseable DSN)"
    return (f"{info.get('user', '')}@{info.get('host', 'localhost')}:{info.get('port', 5432)}"
            f"/{info.get('dbname', '')}")


@contextmanager
def connect(dsn: str, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    """A psycopg connection; connection failures raise `DbError`."""
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit)
    except psycopg.Error as e:
        raise DbError(f"cannot connect to {where(dsn)}: {str(e).strip()}") from None
    try:
        yield conn
    finally:
        conn.close()


def server_error(e: psycopg.Error) -> str:
    """One line for a server error: SQLSTATE, message, and the hint when there is one."""
    diag = e.diag
    text = diag.message_primary or str(e).strip()
    if diag.sqlstate:
        text = f"{text} (SQLSTATE {diag.sqlstate})"
    if diag.message_hint:
        text += f"; hint: {diag.message_hint}"
    return text

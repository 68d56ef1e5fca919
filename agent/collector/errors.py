"""Errors of the collector's store; the CLI turns each into one clear line and exit code 1."""

from __future__ import annotations


class StoreError(RuntimeError):
    """The store cannot be used; the message says which store and why."""


class StoreMissing(StoreError):
    """A SQLite store file that does not exist was opened without `create=True`."""


class StoreUnavailable(StoreError):
    """The store cannot be opened or reached (connection refused, permissions, not a database)."""


class SchemaTooNew(StoreError):
    """The store was migrated by a newer pgwarden than this one; refusing to touch it."""


class SchemaTooOld(StoreError):
    """The store needs migrations and was opened without `migrate=True` (e.g. by a query)."""

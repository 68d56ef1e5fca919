"""The admin API behind ``pgwarden.plan_policy``, ``apply_policy``, ``drift``, ``unguard_all``,
``record_event`` and ``python_info`` (EXECUTE granted to pgwarden_admin only; each also checks
that session_user is a pgwarden admin, so a SECURITY DEFINER wrapper cannot lend the right)."""

from __future__ import annotations

import json
import sys
from typing import Any

from pgwarden_ext import apply as applier
from pgwarden_ext import drift as drifter
from pgwarden_ext import ledger, state
from pgwarden_ext.policy import PolicyError


def _require_admin(plpy: Any) -> None:
    ok = plpy.execute("SELECT pg_catalog.pg_has_role(session_user, 'pgwarden_admin', 'MEMBER')"
                      " AS a")[0]["a"]
    if not ok:
        plpy.error("pgwarden: only members of pgwarden_admin may do this",
                   sqlstate="42501")


def _doc(plpy: Any, doc: str) -> dict[str, Any]:
    try:
        return json.loads(doc)
    except ValueError as e:
        plpy.error(f"pgwarden: the policy document is not JSON: {e}", sqlstate="22023")
        raise  # unreachable: plpy.error raises


def plan(plpy: Any, GD: dict[str, Any], doc: str) -> list[dict[str, str]]:
    _require_admin(plpy)
    try:
        return applier.changes(plpy, GD, _doc(plpy, doc))
    except PolicyError as e:
        plpy.error(str(e), sqlstate="22023")
        raise


def apply(plpy: Any, GD: dict[str, Any], doc: str, source: str, sha256: str,
          git_commit: str | None) -> str:
    _require_admin(plpy)
    try:
        return json.dumps(applier.apply_policy(plpy, GD, _doc(plpy, doc), source, sha256,
                                               git_commit))
    except PolicyError as e:
        plpy.error(str(e), sqlstate="22023")
        raise


def drift(plpy: Any, GD: dict[str, Any]) -> list[dict[str, str]]:
    _require_admin(plpy)
    return drifter.findings(plpy, GD)


def unguard_all(plpy: Any, GD: dict[str, Any]) -> int:
    _require_admin(plpy)
    return applier.unguard_all(plpy, GD)


def record_event(plpy: Any, GD: dict[str, Any], kind: str, fields: str,
                 autonomous: bool) -> bool:
    _require_admin(plpy)
    st = state.get(plpy, GD)
    payload = ledger.record(plpy, kind, policy_version=st.version, **json.loads(fields or "{}"))
    if autonomous:
        return ledger.stage_autonomous(plpy, st, payload)
    ledger.stage(plpy, payload)
    return True


def python_info() -> str:
    """Which Python and sqlglot the server runs (for ``pgwarden db status``)."""
    import sqlglot  # noqa: PLC0415  (the point is to check that it imports)

    import pgwarden_ext

    return json.dumps({"python": sys.version.split()[0], "executable": sys.executable,
                       "pgwarden_ext": pgwarden_ext.__version__,
                       "pgwarden_ext_path": pgwarden_ext.__file__,
                       "sqlglot": sqlglot.__version__, "sqlglot_path": sqlglot.__file__})

"""Install, upgrade, inspect and uninstall the pgwarden extension (run on the database host).

`install(dsn)` does everything a fresh Debian 12 host needs, idempotently:

1. server-side Python: copies ``pg_extension/python/pgwarden_ext`` and sqlglot ==
   `SQLGLOT_VERSION` (pure Python; copied from this virtualenv when it has that exact version,
   else ``pip install --no-deps --target``) to ``<python_root>/<ext version>/python``, where the
   SQL shims find it (each extension version imports its own copy);
2. extension files: ``pgwarden.control`` and ``pgwarden--*.sql`` (each assembled from the parts
   in ``pg_extension/sql/<version>/``) into
   ``$(pg_config --sharedir)/extension`` of the server's major version, with ``@PYTHON_DIR@``
   replaced;
3. SQL, as a superuser: roles ``pgwarden_admin`` (NOLOGIN; cluster-wide, so outside the
   extension), ``pgwarden_agent`` (LOGIN, for the host agent's attestations) and
   ``pgwarden_mask_owner`` (NOLOGIN, owns masking views), ``plpython3u``, ``dblink`` in schema
   ``pgwarden_dblink`` (no PUBLIC access),
   ``CREATE EXTENSION pgwarden`` (or ``ALTER EXTENSION pgwarden UPDATE``);
4. the autonomous-write path: dblink connects back over the unix socket as the installing
   superuser; an "installed" ledger record written through it proves it works, otherwise
   `InstallError` explains the pg_hba.conf line that is needed.

Raises `InstallError` (what failed and how to fix it) or `agent.db.conn.DbError`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from agent.db.conn import DbError, connect, server_error

SQLGLOT_VERSION = "30.30.0"
EXTENSION_DIR = Path(__file__).resolve().parents[2] / "pg_extension"
DEFAULT_PYTHON_ROOT = Path(os.environ.get("PGWARDEN_PYTHON_ROOT", "/usr/local/lib/pgwarden"))
ADMIN_ROLE = "pgwarden_admin"
AGENT_ROLE = "pgwarden_agent"
MASK_OWNER_ROLE = "pgwarden_mask_owner"
# Cluster-wide roles the extension expects (docs/identity.md, docs/masking.md): the host agent's
# login (it may only call pgwarden.attest) and the owner of generated masking views.
EXTRA_ROLES = {AGENT_ROLE: "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT",
               MASK_OWNER_ROLE: "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"}


class InstallError(RuntimeError):
    """Installing or removing the extension failed; the message says what to do."""


def extension_version() -> str:
    """default_version from pgwarden.control (the source of truth)."""
    text = (EXTENSION_DIR / "pgwarden.control").read_text()
    m = re.search(r"^default_version\s*=\s*'([^']+)'", text, re.M)
    if not m:
        raise InstallError(f"no default_version in {EXTENSION_DIR / 'pgwarden.control'}")
    return m.group(1)


def python_dir(root: Path = DEFAULT_PYTHON_ROOT, version: str | None = None) -> Path:
    return root / (version or extension_version()) / "python"


def install(dsn: str, python_root: Path = DEFAULT_PYTHON_ROOT) -> dict[str, Any]:
    """Install or upgrade pgwarden in the database of `dsn` (see module docstring)."""
    version = extension_version()
    with connect(dsn) as conn:
        info = _server(conn)
        pydir = install_python(python_dir(python_root, version))
        sharedir = install_sql_files(info["major"], pydir)
        try:
            _create(conn, version)
            autonomous = _configure_autonomous(conn, info)
            conn.execute("SELECT pgwarden.chain_pending()")
            py = json.loads(conn.execute("SELECT pgwarden.python_info()::text").fetchone()[0])
        except psycopg.Error as e:
            raise InstallError(f"installing pgwarden in {info['db']}: {server_error(e)}") from None
    if not autonomous:
        raise InstallError(
            "pgwarden is installed, but records of blocked statements cannot be written: dblink "
            f"could not connect back to the server as {info['user']} over the unix socket "
            f"{info['socket']}. Allow it in pg_hba.conf (for example `local {info['db']} "
            f"{info['user']} peer`), reload, and run `pgwarden db install` again.")
    return {"version": version, "database": info["db"], "python_dir": str(pydir),
            "extension_dir": str(sharedir), "server_python": py["python"],
            "sqlglot": py["sqlglot"]}


def uninstall(dsn: str, remove_files: bool = False,
              python_root: Path = DEFAULT_PYTHON_ROOT) -> dict[str, Any]:
    """Drop every guard trigger and the extension (its ledger goes with it: the final head is
    returned so it can be anchored); with `remove_files`, also the installed files."""
    with connect(dsn, autocommit=False) as conn:
        installed = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'pgwarden'").fetchone()
        head = None
        try:
            if installed:
                conn.execute("SELECT pgwarden.chain_pending()")
                seq, hash_ = conn.execute("SELECT seq, hash FROM pgwarden.head()").fetchone()
                head = {"seq": seq, "hash": hash_}
                conn.execute("SELECT pgwarden.unguard_all()")
                conn.execute("SELECT pgwarden.unmask_all()")
                conn.execute("DROP EXTENSION pgwarden")
            dblink = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'dblink'"
                " AND extnamespace = 'pgwarden_dblink'::regnamespace").fetchone() if \
                conn.execute("SELECT to_regnamespace('pgwarden_dblink')").fetchone()[0] else None
            if dblink:
                conn.execute("DROP EXTENSION dblink")
            conn.execute("DROP SCHEMA IF EXISTS pgwarden_dblink")
            conn.commit()
        except psycopg.Error as e:
            conn.rollback()
            raise InstallError(f"uninstalling pgwarden: {server_error(e)}") from None
        major = _server(conn)["major"]
    removed: list[str] = []
    if remove_files:
        ext = _sharedir(major) / "extension"
        for f in sorted(ext.glob("pgwarden.control")) + sorted(ext.glob("pgwarden--*.sql")):
            f.unlink()
            removed.append(str(f))
        if python_root.exists():
            shutil.rmtree(python_root)
            removed.append(str(python_root))
    return {"was_installed": bool(installed), "final_head": head, "removed_files": removed}


def status(dsn: str) -> dict[str, Any]:
    """Installed version, server Python, policy in force, ledger head, event triggers."""
    with connect(dsn) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgwarden'"
                           ).fetchone()
        out: dict[str, Any] = {"installed": bool(row), "version": row[0] if row else None,
                               "available": extension_version()}
        if not row:
            return out
        try:
            out["python"] = json.loads(conn.execute(
                "SELECT pgwarden.python_info()::text").fetchone()[0])
            pol = conn.execute(
                "SELECT h.version, p.sha256, p.git_commit, p.applied_at::text, p.applied_by"
                " FROM pgwarden.policy_head h LEFT JOIN pgwarden.policy p USING (version)"
            ).fetchone()
            out["policy"] = dict(zip(("version", "sha256", "git_commit", "applied_at",
                                      "applied_by"), pol))
            seq, hash_ = conn.execute("SELECT seq, hash FROM pgwarden.head()").fetchone()
            pending = conn.execute("SELECT count(*) FROM pgwarden.ledger_staging").fetchone()[0]
            out["ledger"] = {"seq": seq, "hash": hash_, "pending": pending}
            out["event_triggers"] = dict(conn.execute(
                "SELECT evtname::text, evtenabled::text FROM pg_event_trigger"
                " WHERE evtname LIKE 'pgwarden%' ORDER BY 1").fetchall())
        except psycopg.Error as e:
            raise DbError(f"reading pgwarden status: {server_error(e)}") from None
        return out


# -- steps ----------------------------------------------------------------------------------

def _server(conn: psycopg.Connection) -> dict[str, Any]:
    user, superuser = conn.execute(
        "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not superuser:
        raise InstallError(f"pgwarden db install must connect as a superuser; {user} is not")
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int / 10000, current_database(),"
        " current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),"
        " split_part(current_setting('unix_socket_directories'), ',', 1),"
        " current_setting('port')").fetchone()
    major, db, user, _, socket, port = row
    return {"major": major, "db": db, "user": user, "socket": socket.strip(), "port": port}


def _sharedir(major: int) -> Path:
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin/pg_config"), shutil.which("pg_config")]
    for c in candidates:
        if c and Path(c).exists():
            out = subprocess.run([str(c), "--sharedir"], capture_output=True, text=True,
                                 check=True).stdout.strip()
            return Path(out)
    raise InstallError(f"pg_config for PostgreSQL {major} not found (Debian: postgresql-{major})")


def extension_scripts() -> dict[str, str]:
    """Script file name -> text. Each folder pg_extension/sql/<V> (a version, or an upgrade
    <A>--<B>) holds one part per concern; the parts, in file-name order, make pgwarden--<V>.sql.
    Parts keep each concern (guardrails, masking, approvals...) in its own file."""
    scripts = {}
    for folder in sorted(p for p in (EXTENSION_DIR / "sql").iterdir() if p.is_dir()):
        parts = sorted(folder.glob("*.sql"))
        scripts[f"pgwarden--{folder.name}.sql"] = "".join(p.read_text() for p in parts)
    return scripts


def install_sql_files(major: int, pydir: Path) -> Path:
    """Copy the control file and every SQL script into the server's extension directory."""
    target = _sharedir(major) / "extension"
    if not target.is_dir():
        raise InstallError(f"{target} does not exist: is postgresql-{major} installed here?")
    try:
        shutil.copyfile(EXTENSION_DIR / "pgwarden.control", target / "pgwarden.control")
        for name, text in extension_scripts().items():
            (target / name).write_text(text.replace("@PYTHON_DIR@", str(pydir)))
    except PermissionError as e:
        raise InstallError(f"cannot write {e.filename}: run as root on the database host") from None
    return target


def install_python(pydir: Path) -> Path:
    """Copy pgwarden_ext and the pinned sqlglot into `pydir` (readable by the server)."""
    try:
        pydir.mkdir(parents=True, exist_ok=True)
        pkg = pydir / "pgwarden_ext"
        if pkg.exists():
            shutil.rmtree(pkg)
        shutil.copytree(EXTENSION_DIR / "python" / "pgwarden_ext", pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if not (pydir / f"sqlglot-{SQLGLOT_VERSION}.dist-info").exists():
            _install_sqlglot(pydir)
        _compile(pydir)
        for path in [pydir.parent.parent, pydir.parent, *pydir.rglob("*"), pydir]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    except PermissionError as e:
        raise InstallError(f"cannot write {e.filename}: run as root on the database host") from None
    _check_server_python(pydir)
    return pydir


def _install_sqlglot(pydir: Path) -> None:
    for old in list(pydir.glob("sqlglot")) + list(pydir.glob("sqlglot-*.dist-info")):
        shutil.rmtree(old)
    try:
        local = importlib.metadata.distribution("sqlglot")
    except importlib.metadata.PackageNotFoundError:
        local = None
    if local is not None and local.version == SQLGLOT_VERSION:
        src = Path(str(local.locate_file("sqlglot")))
        shutil.copytree(src, pydir / "sqlglot", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(Path(str(local._path)), pydir / f"sqlglot-{SQLGLOT_VERSION}.dist-info")  # type: ignore[attr-defined]
        return
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "--target", str(pydir),
                        f"sqlglot=={SQLGLOT_VERSION}"], capture_output=True, text=True)
    if p.returncode != 0:
        raise InstallError(f"pip could not install sqlglot=={SQLGLOT_VERSION} into {pydir}: "
                           f"{p.stderr.strip()[-500:]}")


def _server_python() -> str:
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def _compile(pydir: Path) -> None:
    """Byte-compile with the server's Python: the server runs as postgres and cannot write
    __pycache__ here, so without this every backend would compile sqlglot again (~0.5 s)."""
    p = subprocess.run([_server_python(), "-m", "compileall", "-q", "-j", "0", str(pydir)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise InstallError(f"compiling {pydir} failed: {p.stdout.strip()[-500:]}")


def _check_server_python(pydir: Path) -> None:
    """The server's Python (Debian's /usr/bin/python3, which PL/Python embeds) must import both."""
    exe = _server_python()
    code = (f"import sys; sys.path.insert(0, {str(pydir)!r}); import sqlglot, pgwarden_ext; "
            "assert sqlglot.__version__ == " + repr(SQLGLOT_VERSION))
    with tempfile.TemporaryDirectory() as cwd:
        p = subprocess.run([exe, "-c", code], capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        raise InstallError(f"{exe} cannot import pgwarden_ext/sqlglot from {pydir}: "
                           f"{p.stderr.strip()[-500:]}")


def _create(conn: psycopg.Connection, version: str) -> None:
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ADMIN_ROLE]).fetchone():
        conn.execute(f"CREATE ROLE {ADMIN_ROLE} NOLOGIN")
    for role, attrs in EXTRA_ROLES.items():
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
            conn.execute(f"CREATE ROLE {role} {attrs}")
    conn.execute("CREATE EXTENSION IF NOT EXISTS plpython3u")
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'dblink'").fetchone():
        conn.execute("CREATE SCHEMA IF NOT EXISTS pgwarden_dblink")
        conn.execute("REVOKE ALL ON SCHEMA pgwarden_dblink FROM PUBLIC")
        conn.execute("CREATE EXTENSION dblink SCHEMA pgwarden_dblink")
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgwarden'").fetchone()
    if row is None:
        conn.execute("CREATE EXTENSION pgwarden")
    elif row[0] != version:
        conn.execute(f"ALTER EXTENSION pgwarden UPDATE TO '{version}'")


def _configure_autonomous(conn: psycopg.Connection, info: dict[str, Any]) -> bool:
    conninfo = psycopg.conninfo.make_conninfo(host=info["socket"], port=info["port"],
                                              user=info["user"])
    conn.execute("UPDATE pgwarden.settings SET value = %s WHERE name = 'autonomous_conninfo'",
                 [conninfo])
    fields = json.dumps({"extension_version": extension_version(), "database": info["db"]})
    return bool(conn.execute("SELECT pgwarden.record_event('installed', %s::jsonb, true)",
                             [fields]).fetchone()[0])


__all__ = ["install", "uninstall", "status", "InstallError", "DbError", "SQLGLOT_VERSION"]

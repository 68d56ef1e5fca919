"""The `pgwarden` command: a thin click layer over the library.

Subcommands live in one module each (``agent/cli/<name>_cmd.py``) and are imported only when
invoked, so `pgwarden --help` stays fast and never loads bcc or a database driver.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from agent import __version__

# command name -> "module:attribute"; each module owns its command group or command.
COMMANDS: dict[str, str] = {
    "agent": "agent.cli.agent_cmd:agent",
    "collector": "agent.cli.collector_cmd:collector",
    "sessions": "agent.cli.query_cmd:sessions",
    "session": "agent.cli.query_cmd:session",
    "statements": "agent.cli.query_cmd:statements",
    "db": "agent.cli.db_cmd:db",
    "policy": "agent.cli.policy_cmd:policy",
    "audit": "agent.cli.audit_cmd:audit",
    "discover": "agent.cli.discover_cmd:discover",
    "identity": "agent.cli.identity_cmd:identity",
    "approvals": "agent.cli.approvals_cmd:approvals",
    "notify": "agent.cli.notify_cmd:notify",
}


def _available(name: str) -> bool:
    return importlib.util.find_spec(COMMANDS[name].split(":")[0]) is not None


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (click docs, "Lazy Loading")."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if _available(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _available(cmd_name):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pgwarden")
def main() -> None:
    """Govern and observe PostgreSQL access by people, services and AI agents, without a proxy.

    \b
    Capture (host agent, eBPF):    pgwarden agent run | agent status
    Collector:                     pgwarden collector run
    Queries for security teams:    pgwarden sessions | session ID | statements
    Extension (inside PostgreSQL): pgwarden db install | policy plan|apply|drift | audit verify
    PII and identity:              pgwarden discover | identity
    Approvals:                     pgwarden approvals list|approve|deny | notify run

    Configuration file: --config PATH, $PGWARDEN_CONFIG or /etc/pgwarden/config.toml.
    Exit codes: 0 ok, 1 failure or findings, 2 usage error.
    """

"""The pgwarden configuration file (TOML), shared by every command.

Looked up in this order: the `--config PATH` option, `$PGWARDEN_CONFIG`, then
`/etc/pgwarden/config.toml`. A missing default file means "no configuration"; a missing file that
was named explicitly, or a file that is not valid TOML, raises `ConfigError` naming the file and,
for syntax errors, the line and column (from tomllib).

Sections (every key optional; command-line options win over the file):

    [agent]      collector = "http://127.0.0.1:7400"   token = "..."   state_dir = "/var/lib/pgwarden"
                 spool_max_bytes = 268435456          capture_raw = false
    [collector]  listen = "127.0.0.1:7400"   store = "/var/lib/pgwarden/collector.db"   token = "..."
    [query]      store = "/var/lib/pgwarden/collector.db"   (or a postgresql:// URL)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/pgwarden/config.toml")


class ConfigError(ValueError):
    """The configuration file is missing (when named explicitly), unreadable or invalid."""


@dataclass(frozen=True)
class Config:
    """A parsed configuration file; `path` is None when no file was found."""

    path: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def get(self, section: str, key: str, default: Any = None) -> Any:
        """`data[section][key]`, or `default` when either is absent."""
        value = self.data.get(section, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}: [{section}] must be a table")
        return value.get(key, default)


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration from `path`, `$PGWARDEN_CONFIG` or the default location."""
    explicit = path or os.environ.get("PGWARDEN_CONFIG")
    target = Path(explicit) if explicit else DEFAULT_PATH
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{target}: no such configuration file") from None
        return Config()
    except OSError as e:
        raise ConfigError(f"{target}: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{target}: {e}") from None
    return Config(target, data)

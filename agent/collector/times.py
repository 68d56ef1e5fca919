"""Timestamps: the wire and the store hold integer microseconds since the Unix epoch (UTC).

This module converts them to ISO 8601 text (UTC for `--json`, local time for tables) and parses
the `--since` / `--until` arguments of the query commands: an ISO 8601 time (a time without an
offset is local time) or a duration back from now such as `90s`, `15m`, `2h`, `1d`, `1w`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RELATIVE = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def now_us() -> int:
    """The current time in microseconds since the epoch."""
    return to_us(datetime.now(UTC))


def to_us(moment: datetime) -> int:
    """An aware datetime as microseconds since the epoch (exact, no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def iso_utc(us: int | None) -> str | None:
    """`2024-05-01T12:00:00.000123Z` (always six fractional digits), or None for None."""
    if us is None:
        return None
    return from_us(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_local(us: int | None, timespec: str = "milliseconds") -> str:
    """Local time with its offset, e.g. `2024-05-01T14:00:00.123+02:00`; "" for None."""
    if us is None:
        return ""
    return from_us(us).astimezone().isoformat(timespec=timespec)


def parse_time(text: str, *, now: int | None = None) -> int:
    """Parse `--since`/`--until`: ISO 8601 (naive = local time) or `<n>{s,m,h,d,w}` before now.

    Returns microseconds since the epoch. Raises ValueError with a message fit for the user.
    """
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2).lower()
        base = now_us() if now is None else now
        return base - amount * _UNIT_SECONDS[unit] * 1_000_000
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (2024-05-01T12:00:00, 2024-05-01T10:00Z) "
            "nor a duration back from now (30s, 15m, 2h, 1d, 1w)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive means local time, as displayed in tables
    return to_us(moment)

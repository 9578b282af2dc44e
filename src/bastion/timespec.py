"""Points in time as users write them, the same for the CLI and the API.

``--since 7d`` on the command line and ``?since=7d`` on the API mean the same thing: Unix
seconds (``1767225600``), an ISO date or date-time (``2026-01-31``, ``2026-01-31T12:00``), or
an age (``30s``, ``30m``, ``2h``, ``7d``, ``2w``).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from bastion.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# A number or an age, a date, an RFC 3339 date-time (what the API documents in
# bastion.server.contract.TIME_SCHEMA), and the CLI's local date-time to the minute or second.
_NUMBER = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,6})?)([smhdw]?)")
_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?"
                  r"(?:Z|[+-][0-9]{2}:[0-9]{2})?)?)?", re.IGNORECASE)
FORMS = "Unix seconds, 2026-01-31, 2026-01-31T12:00, or an age like 30m, 2h, 7d"


_EARLIEST, _LATEST = 0.0, 253402214400.0  # 1970-01-01 .. 9999-12-30: every datetime can show it


def parse_time(text: str | float | None, *, now: float | None = None) -> float | None:
    """Return the timestamp ``text`` names (``None`` stays ``None``), within 1970..9999."""
    when = _parse(text, now)
    return None if when is None else min(max(when, _EARLIEST), _LATEST)


def _parse(text: str | float | None, now: float | None) -> float | None:
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)
    text = text.strip()
    number = _NUMBER.fullmatch(text)
    if number and number[2]:
        return (time.time() if now is None else now) - float(number[1]) * _UNITS[number[2]]
    if number:
        return float(number[1])
    if not _ISO.fullmatch(text):
        raise ConfigError(f"cannot read the time {text!r}", fix=f"use {FORMS}")
    try:  # RFC 3339 allows a lower-case t/z and a leap second (:60, read as :59)
        when = datetime.fromisoformat(re.sub(r"(T\d\d:\d\d):60", r"\1:59", text.upper()))
    except ValueError as exc:
        raise ConfigError(f"cannot read the time {text!r}", fix=f"use {FORMS}") from exc
    try:
        return when.timestamp()
    except (ValueError, OverflowError):  # local time of a year the platform cannot convert
        return when.replace(tzinfo=when.tzinfo or UTC).timestamp()

"""Points in time as users write them, the same for the CLI and the API.

``--since 7d`` on the command line and ``?since=7d`` on the API mean the same thing: Unix
seconds (``1767225600``), an ISO date or date-time (``2026-01-31``, ``2026-01-31T12:00``), or
an age (``30s``, ``30m``, ``2h``, ``7d``, ``2w``).
"""

from __future__ import annotations

import time
from datetime import datetime

from bastion.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
FORMS = "Unix seconds, 2026-01-31, 2026-01-31T12:00, or an age like 30m, 2h, 7d"


def parse_time(text: str | float | None, *, now: float | None = None) -> float | None:
    """Return the timestamp ``text`` names (``None`` stays ``None``)."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)
    text = text.strip()
    if text[-1:] in _UNITS and text[:-1].replace(".", "", 1).isdigit():
        return (time.time() if now is None else now) - float(text[:-1]) * _UNITS[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ConfigError(f"cannot read the time {text!r}", fix=f"use {FORMS}") from None

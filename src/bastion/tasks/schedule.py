"""When a clock task fires next, and what to do about fires missed while bastion was down.

Pure functions of the time (Unix seconds), so the unit tests drive them with a fake clock.
Cron lines are read by ``croniter`` on time-zone-aware datetimes, so daylight saving time is
the library's: a time the clock skips (02:30 on a spring-forward night) fires at the first
minute after the gap, and a time the clock shows twice (fall-back) fires once.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter

from bastion.tasks.spec import Missed, Schedule, parse_at, zone

GRACE_S = 60.0
"""A fire handled this late is on time; one due earlier than this was missed (bastion down)."""


def _local(ts: float, tz: str) -> datetime:
    return datetime.fromtimestamp(ts, zone(tz))


_lock = threading.Lock()


@functools.lru_cache(maxsize=4096)
def _parsed(expr: str) -> croniter:
    # One parsed iterator per cron line (parsing is most of croniter's cost); callers hold
    # _lock and set its position before each use.
    return croniter(expr, datetime(2026, 1, 1, tzinfo=UTC))


def _cron_next(expr: str, start: datetime, *, prev: bool = False) -> datetime:
    with _lock:
        it = _parsed(expr)
        it.set_current(start, force=True)
        return it.get_prev(datetime) if prev else it.get_next(datetime)  # type: ignore[no-any-return]


def next_fire(schedule: Schedule, tz: str, after: float) -> float | None:
    """Return the first fire time strictly after ``after`` (``None``: never again)."""
    if schedule.kind == "every":
        return after + schedule.every_s
    if schedule.kind == "at":
        when = parse_at(schedule.expr, tz)
        return when if when > after else None
    if schedule.kind != "cron":
        return None
    start = _local(after, tz)
    try:
        nxt = _cron_next(schedule.expr, start)
        # A wall-clock time shown twice (fall-back) fires once: skip its second showing.
        while nxt.replace(tzinfo=None) == start.replace(tzinfo=None):
            nxt = _cron_next(schedule.expr, nxt)
    except (CroniterBadDateError, OverflowError, ValueError):  # no fire time left (year 9999)
        return None
    return nxt.timestamp()


def latest_due(schedule: Schedule, tz: str, after: float, now: float) -> float | None:
    """Return the latest fire time in ``(after, now]`` (``None``: none fell due)."""
    first = next_fire(schedule, tz, after)
    if first is None or first > now:
        return None
    if schedule.kind == "every":
        return after + math.floor((now - after) / schedule.every_s) * schedule.every_s
    if schedule.kind == "cron":
        prev = _cron_next(schedule.expr, _local(now, tz) + timedelta(microseconds=1), prev=True)
        return max(prev.timestamp(), first)
    return first


@dataclass(frozen=True, slots=True)
class Plan:
    """What the scheduler does for one task at one moment.

    ``fire``: the scheduled time to start a run for (``None``: start nothing); ``missed``:
    whether fire times fell due that nothing ran on time; ``handled``: the new "last fire"
    mark; ``next``: the next fire time after it.
    """

    fire: float | None
    missed: bool
    handled: float
    next: float | None


def plan(schedule: Schedule, tz: str, missed: Missed, last: float, now: float,
         grace: float = GRACE_S) -> Plan:
    """Decide what to fire at ``now`` for a task whose last handled fire time is ``last``.

    One fire time due within ``grace`` is on time and fires. Older ones were missed (bastion
    was down or asleep): ``run_once`` fires once for all of them, ``skip`` drops them (a fire
    time due within ``grace`` still fires, as itself). Either way the mark moves to the latest
    due time, so nothing fires twice and a long outage never causes a burst.
    """
    first = next_fire(schedule, tz, last)
    if first is None or first > now:
        return Plan(None, False, last, first)
    second = next_fire(schedule, tz, first)
    if second is None or second > now:  # the common case: one fire time fell due
        latest, after = first, second
    else:
        latest = latest_due(schedule, tz, last, now) or first
        after = next_fire(schedule, tz, latest)
    on_time = latest >= now - grace
    was_missed = latest > first or not on_time
    fire = latest if on_time or missed == "run_once" else None
    return Plan(fire, was_missed, latest, after)

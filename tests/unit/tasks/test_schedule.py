"""The timing logic on a fake clock: cron with DST, every, at, missed fires (skip / run_once)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from bastion.tasks.schedule import next_fire, plan
from bastion.tasks.spec import Schedule

PARIS = ZoneInfo("Europe/Paris")


def ts(y: int, mo: int, d: int, h: int, mi: int = 0, tz: ZoneInfo = PARIS, fold: int = 0
       ) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz, fold=fold).timestamp()


def test_cron_in_a_time_zone() -> None:
    daily = Schedule("cron", "0 7 * * *")
    assert next_fire(daily, "Europe/Paris", ts(2026, 7, 1, 6)) == ts(2026, 7, 1, 7)
    assert next_fire(daily, "Europe/Paris", ts(2026, 7, 1, 7)) == ts(2026, 7, 2, 7)
    utc = next_fire(daily, "UTC", ts(2026, 7, 1, 6))
    assert utc == ts(2026, 7, 1, 9)  # 07:00 UTC is 09:00 in Paris in summer


def test_cron_across_daylight_saving_time() -> None:
    daily = Schedule("cron", "0 7 * * *")
    # 7:00 local every day, whatever the offset: 23 h and 25 h apart on the switch days
    spring = next_fire(daily, "Europe/Paris", ts(2026, 3, 28, 7))
    assert spring == ts(2026, 3, 29, 7) and spring - ts(2026, 3, 28, 7) == 23 * 3600
    autumn = next_fire(daily, "Europe/Paris", ts(2026, 10, 24, 7))
    assert autumn == ts(2026, 10, 25, 7) and autumn - ts(2026, 10, 24, 7) == 25 * 3600
    night = Schedule("cron", "30 2 * * *")
    # 02:30 does not exist on 2026-03-29: it fires once, at the end of the gap
    gap = next_fire(night, "Europe/Paris", ts(2026, 3, 28, 3))
    assert gap == ts(2026, 3, 29, 3)
    assert next_fire(night, "Europe/Paris", gap) == ts(2026, 3, 30, 2, 30)
    # 02:30 happens twice on 2026-10-25: it fires once
    first = next_fire(night, "Europe/Paris", ts(2026, 10, 24, 3))
    assert first == ts(2026, 10, 25, 2, 30, fold=0)
    assert next_fire(night, "Europe/Paris", first) == ts(2026, 10, 26, 2, 30)


def test_every_and_at() -> None:
    every = Schedule("every", "15m")
    assert next_fire(every, "UTC", 1000.0) == 1900.0
    at = Schedule("at", "2026-07-01T07:00")
    when = ts(2026, 7, 1, 7)
    assert next_fire(at, "Europe/Paris", when - 5) == when
    assert next_fire(at, "Europe/Paris", when) is None  # once only
    assert next_fire(Schedule("webhook"), "UTC", 0.0) is None


def test_plan_on_time() -> None:
    every = Schedule("every", "10m")
    p = plan(every, "UTC", "run_once", last=0.0, now=600.5)
    assert (p.fire, p.missed, p.handled, p.next) == (600.0, False, 600.0, 1200.0)
    assert plan(every, "UTC", "run_once", last=0.0, now=599.0).fire is None


def test_missed_while_down_run_once_fires_once_for_all() -> None:
    every = Schedule("every", "10m")
    down = 10 * 3600.0  # ten hours down: 60 fire times missed
    p = plan(every, "UTC", "run_once", last=0.0, now=down + 100)
    assert p.fire == down and p.missed and p.handled == down and p.next == down + 600
    daily = Schedule("cron", "0 7 * * *")
    p = plan(daily, "Europe/Paris", "run_once", last=ts(2026, 7, 1, 7), now=ts(2026, 7, 5, 12))
    assert p.fire == ts(2026, 7, 5, 7) and p.missed and p.next == ts(2026, 7, 6, 7)


def test_missed_while_down_skip_fires_nothing_old() -> None:
    daily = Schedule("cron", "0 7 * * *")
    p = plan(daily, "Europe/Paris", "skip", last=ts(2026, 7, 1, 7), now=ts(2026, 7, 5, 12))
    assert p.fire is None and p.missed and p.handled == ts(2026, 7, 5, 7)
    # back up just in time for today's: today's fires, the missed ones do not
    p = plan(daily, "Europe/Paris", "skip", last=ts(2026, 7, 1, 7),
             now=ts(2026, 7, 5, 7) + 2)
    assert p.fire == ts(2026, 7, 5, 7) and p.missed
    at = Schedule("at", "2026-07-01T07:00")
    p = plan(at, "Europe/Paris", "skip", last=ts(2026, 6, 1, 0), now=ts(2026, 7, 2, 0))
    assert p.fire is None and p.missed and p.next is None

"""The task definitions refuse bad input at construction and keep CRITICAL off auto-approval."""

from __future__ import annotations

import dataclasses

import pytest

from bastion.errors import ConfigError
from bastion.tasks.spec import (
    AutoApprove,
    NotifyTarget,
    Schedule,
    TaskPolicy,
    TaskSpec,
    Trigger,
    parse_at,
    parse_duration,
)
from bastion.tools.base import Risk


def spec(**kw: object) -> TaskSpec:
    base: dict[str, object] = {"name": "daily", "owner": "alice", "prompt": "summarise",
                               "schedule": Schedule("cron", "0 7 * * *")}
    return TaskSpec(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0),
    ("1h30m", 5400.0), (" 10M ", 600.0), (45, 45.0),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15x", "-5m", "0", "1.5h", "1m1h"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_duration(text)
    assert err.value.fix


def test_schedules_are_checked() -> None:
    assert Schedule("every", "15m").every_s == 900.0
    assert Schedule("cron", "0 7 * * *").clock
    assert not Schedule("webhook").clock
    assert Schedule("cron", "@daily").clock
    for kind, expr in [("cron", "61 * * * *"), ("cron", "0 7 * *x *"), ("every", "5s"),
                       ("cron", "* * * * * *"), ("cron", "0 0 31 2 *"), ("cron", "@reboot"),
                       ("at", "tomorrow"), ("file", " "), ("webhook", "x"), ("hourly", "")]:
        with pytest.raises(ConfigError):
            Schedule(kind, expr)  # type: ignore[arg-type]


def test_at_without_offset_is_read_in_the_task_zone() -> None:
    utc = parse_at("2026-07-01T07:00")
    assert parse_at("2026-07-01T07:00", "Europe/Paris") == utc - 2 * 3600
    assert parse_at("2026-07-01T07:00+00:00", "Europe/Paris") == utc


def test_specs_refuse_bad_names_zones_prompts_and_missed_policies() -> None:
    for bad in [{"name": "../x"}, {"name": ""}, {"name": "a" * 65}, {"tz": "Mars/Olympus"},
                {"prompt": "  "}, {"owner": ""}, {"missed": "always"}]:
        with pytest.raises(ConfigError) as err:
            spec(**bad)
        assert err.value.fix
    assert spec().missed == "run_once"


def test_spec_is_frozen_and_round_trips() -> None:
    s = spec(tz="Europe/Paris",
             policy=TaskPolicy(tools=("read_*", "web_fetch"), max_steps=4, max_tokens=2000,
                               wall_clock_s=600, egress=("example.com",),
                               auto_approve=(AutoApprove("read_*", Risk.HIGH),)),
             notify=(NotifyTarget.parse("https://hooks.example/x"),
                     NotifyTarget.parse("ntfy:https://ntfy.sh/me"),
                     NotifyTarget.parse("mailto:a@example.com")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"  # type: ignore[misc]
    assert TaskSpec.from_dict(s.to_dict()) == s
    assert [n.kind for n in s.notify] == ["webhook", "ntfy", "email"]


def test_critical_is_never_auto_approved() -> None:
    with pytest.raises(ConfigError, match="CRITICAL"):
        AutoApprove("shell", Risk.CRITICAL)
    policy = TaskPolicy(tools=("shell", "read_*"), auto_approve=(AutoApprove("*", Risk.HIGH),))
    assert policy.auto_approves("shell", Risk.HIGH)
    assert not policy.auto_approves("shell", Risk.CRITICAL)
    assert not policy.auto_approves("write_file", Risk.LOW)  # not on the allowlist
    assert not TaskPolicy().auto_approves("read_file", Risk.LOW)  # no rule, no auto-approval


def test_policy_allowlist_and_digest() -> None:
    assert TaskPolicy().allows_tool("anything")
    narrow = TaskPolicy(tools=("read_*",))
    assert narrow.allows_tool("read_file") and not narrow.allows_tool("shell")
    assert TaskPolicy(tools=()).allows_tool("read_file") is False
    assert narrow.digest() == TaskPolicy(tools=("read_*",)).digest() != TaskPolicy().digest()
    with pytest.raises(ConfigError):
        TaskPolicy(max_steps=0)
    with pytest.raises(ConfigError):
        TaskPolicy(wall_clock_s=-1)


@pytest.mark.parametrize("text", ["ftp://x", "mailto:nobody", "ntfy:topic", "hooks.example"])
def test_bad_notify_targets(text: str) -> None:
    with pytest.raises(ConfigError):
        NotifyTarget.parse(text)


def test_trigger() -> None:
    t = Trigger("webhook", 1767225600.0, "nonce abc", '{"alert": 1}')
    assert t.when() == "2026-01-01T00:00:00+00:00"
    with pytest.raises(ConfigError):
        Trigger("sometimes", 0.0)  # type: ignore[arg-type]

"""What an unattended task is: typed, frozen definitions shared by the scheduler and the run engine.

A :class:`TaskSpec` says who owns a task, what it asks the agent, when it fires
(:class:`Schedule`), what a run may do (:class:`TaskPolicy`) and whom to tell. A
:class:`Trigger` says why one run started. The scheduler hands both to a :class:`RunStarter`
(the run engine) and never waits for the run.

Everything here is checked when it is built: a bad name, cron line, time zone, duration or
notify target raises :class:`~bastion.errors.ConfigError` with a fix, so the CLI and the API
refuse bad input in one line.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from bastion.errors import BastionError, ConfigError
from bastion.tools.base import Risk

ScheduleKind = Literal["cron", "every", "at", "webhook", "file", "manual"]
TriggerKind = ScheduleKind
Missed = Literal["skip", "run_once"]
NotifyKind = Literal["webhook", "ntfy", "email"]

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MIN_EVERY_S = 10.0
_DURATION = re.compile(r"(?:([0-9]{1,6})d)?(?:([0-9]{1,6})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,8})s?)?")
_EMAIL = re.compile(r"[^@\s:/]+@[^@\s:/]+\.[^@\s:/]+")
_URL = re.compile(r"https?://[^\s]+", re.IGNORECASE)


class TaskLimitError(BastionError):
    """A run was refused because too many runs are going (globally or for one user)."""


def parse_duration(text: str | float, *, what: str = "duration") -> float:
    """Return seconds for ``90``, ``90s``, ``15m``, ``2h``, ``1d`` or ``1h30m`` (> 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        match = _DURATION.fullmatch(raw) if raw else None
        if match is None or not any(match.groups()):
            raise ConfigError(f"cannot read the {what} {text!r}",
                              fix="write it like 90s, 15m, 2h, 1d or 1h30m")
        d, h, m, s = (int(g or 0) for g in match.groups())
        seconds = float(((d * 24 + h) * 60 + m) * 60 + s)
    if not seconds > 0:
        raise ConfigError(f"the {what} must be more than 0 seconds", fix="give e.g. 15m")
    return seconds


def zone(tz: str) -> ZoneInfo:
    """Return the IANA time zone ``tz`` (``Europe/Paris``, ``UTC``)."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {tz!r}",
                          fix="use an IANA name such as UTC or Europe/Paris") from exc


def parse_at(text: str, tz: str = "UTC") -> float:
    """Return the Unix time of an ISO date-time; one without an offset is read in ``tz``."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(f"cannot read the time {text!r}",
                          fix="use an ISO time such as 2026-12-24T18:00 or "
                              "2026-12-24T18:00+01:00") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone(tz))
    return when.timestamp()


_CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                 "@hourly")


@functools.lru_cache(maxsize=4096)  # every task load checks its line: parse each line once
def _check_cron(expr: str) -> None:
    """Refuse anything but five cron fields (or an alias) that fire at some time."""
    fields = expr.split()
    shaped = len(fields) == 5 or (len(fields) == 1 and fields[0].lower() in _CRON_ALIASES)
    if not shaped or not croniter.is_valid(expr):
        raise ConfigError(f"cannot read the cron line {expr!r}",
                          fix='give five fields: minute hour day month weekday, e.g. '
                              '"0 7 * * *"')
    try:
        croniter(expr, datetime(2026, 1, 1, tzinfo=UTC)).get_next(float)
    except CroniterBadDateError as exc:
        raise ConfigError(f"the cron line {expr!r} never fires",
                          fix="check the day and month (e.g. there is no 31 February)") from exc


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a task fires by itself.

    ``kind`` and ``expr``: ``cron`` with a five-field cron line (``0 7 * * *``), ``every`` with
    seconds (``900``), ``at`` with an ISO time, ``file`` with a workspace folder to watch,
    ``webhook`` and ``manual`` with no ``expr`` (they fire only when called).
    """

    kind: ScheduleKind
    expr: str = ""

    def __post_init__(self) -> None:
        if self.kind not in get_args(ScheduleKind):
            raise ConfigError(f"unknown schedule kind {self.kind!r}",
                              fix="use cron, every, at, webhook, file or manual")
        if self.kind == "cron":
            _check_cron(self.expr)
        if self.kind == "every":
            seconds = parse_duration(self.expr, what="interval")
            if seconds < MIN_EVERY_S:
                raise ConfigError(f"--every {self.expr} is too often",
                                  fix=f"use at least {MIN_EVERY_S:g}s")
            object.__setattr__(self, "expr", f"{seconds:g}")
        if self.kind == "at":
            parse_at(self.expr)
        if self.kind == "file" and not self.expr.strip():
            raise ConfigError("--watch needs a folder", fix="give a folder in the workspace")
        if self.kind in ("webhook", "manual") and self.expr:
            raise ConfigError(f"a {self.kind} schedule takes no value", fix="drop the value")

    @property
    def every_s(self) -> float:
        """The interval of an ``every`` schedule in seconds."""
        return float(self.expr)

    @property
    def clock(self) -> bool:
        """True for the kinds the scheduler's clock fires (cron, every, at)."""
        return self.kind in ("cron", "every", "at")


@dataclass(frozen=True, slots=True)
class AutoApprove:
    """An explicit per-task rule that approves calls without a human.

    Calls of tools matching ``tool`` (a glob) up to ``max_risk`` are approved; ``max_risk`` is
    at most HIGH: CRITICAL is never auto-approved.
    """

    tool: str
    max_risk: Risk = Risk.MEDIUM

    def __post_init__(self) -> None:
        risk = Risk(self.max_risk)
        object.__setattr__(self, "max_risk", risk)
        if risk >= Risk.CRITICAL:
            raise ConfigError(f"auto-approval of {self.tool!r} up to CRITICAL is not allowed",
                              fix="auto-approve up to high at most; CRITICAL calls always ask")
        if not self.tool.strip():
            raise ConfigError("an auto-approve rule needs a tool name or glob", fix="e.g. read_*")


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    """What a run of the task may do, narrower than its owner's rights (never wider).

    ``None`` in a field means "no extra limit beyond the owner's and the config's".
    """

    tools: tuple[str, ...] | None = None  # allowlist of tool-name globs
    max_steps: int | None = None
    max_tokens: int | None = None
    wall_clock_s: float | None = None
    egress: tuple[str, ...] | None = None  # allowed domains (globs like *.example.com)
    approval_deadline_s: float = 3600.0  # a parked call is denied after this
    auto_approve: tuple[AutoApprove, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_tokens"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{name} must be a whole number of at least 1",
                                  fix=f"e.g. --{name.replace('_', '-')} 10")
        for name in ("wall_clock_s", "approval_deadline_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be more than 0 seconds", fix="e.g. 10m")
        for name in ("tools", "egress"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(v.strip() for v in value if v.strip()))

    def allows_tool(self, tool: str) -> bool:
        """Return True when the task's allowlist (if any) names ``tool``."""
        return self.tools is None or any(fnmatch.fnmatchcase(tool, g) for g in self.tools)

    def auto_approves(self, tool: str, risk: Risk) -> bool:
        """Return True when an explicit rule approves this call; never for CRITICAL."""
        if risk >= Risk.CRITICAL or not self.allows_tool(tool):
            return False
        return any(fnmatch.fnmatchcase(tool, r.tool) and risk <= r.max_risk
                   for r in self.auto_approve)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (risks by name)."""
        out = asdict(self)
        out["tools"] = None if self.tools is None else list(self.tools)
        out["egress"] = None if self.egress is None else list(self.egress)
        out["auto_approve"] = [{"tool": r.tool, "max_risk": r.max_risk.name.lower()}
                               for r in self.auto_approve]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskPolicy:
        """Build from :meth:`to_dict`'s shape (the store and the API use it)."""
        rules = tuple(AutoApprove(r["tool"], Risk.parse(str(r.get("max_risk", "medium"))))
                      for r in data.get("auto_approve") or ())
        tools, egress = data.get("tools"), data.get("egress")
        return cls(
            tools=None if tools is None else tuple(tools),
            max_steps=data.get("max_steps"),
            max_tokens=data.get("max_tokens"),
            wall_clock_s=data.get("wall_clock_s"),
            egress=None if egress is None else tuple(egress),
            approval_deadline_s=float(data.get("approval_deadline_s", 3600.0)),
            auto_approve=rules,
        )

    def digest(self) -> str:
        """sha256 of the canonical JSON: the policy hash a run receipt names."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """Where to tell the approver that a run waits: a webhook, an ntfy topic or an e-mail."""

    kind: NotifyKind
    address: str

    @classmethod
    def parse(cls, text: str) -> NotifyTarget:
        """Read ``https://...`` (webhook), ``ntfy:https://host/topic`` or ``mailto:a@b.c``."""
        raw = text.strip()
        low = raw.lower()
        if low.startswith("mailto:") and _EMAIL.fullmatch(raw[7:]):
            return cls("email", raw[7:])
        if low.startswith("ntfy:") and _URL.fullmatch(raw[5:]):
            return cls("ntfy", raw[5:])
        if _URL.fullmatch(raw):
            return cls("webhook", raw)
        raise ConfigError(f"cannot read the notify target {text!r}",
                          fix="use https://host/hook, ntfy:https://ntfy.sh/topic or "
                              "mailto:you@example.com")

    def __str__(self) -> str:
        return {"webhook": "", "ntfy": "ntfy:", "email": "mailto:"}[self.kind] + self.address


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One unattended task of one owner (names are unique per owner)."""

    name: str
    owner: str
    prompt: str
    schedule: Schedule
    tz: str = "UTC"
    policy: TaskPolicy = field(default_factory=TaskPolicy)
    notify: tuple[NotifyTarget, ...] = ()
    missed: Missed = "run_once"
    paused: bool = False

    def __post_init__(self) -> None:
        if not NAME_RE.fullmatch(self.name):
            raise ConfigError(f"bad task name {self.name!r}",
                              fix="use 1-64 letters, digits, '.', '_' or '-', starting with "
                                  "a letter or digit")
        if not self.owner:
            raise ConfigError("a task needs an owner", fix="run it as a user")
        if not self.prompt.strip():
            raise ConfigError("a task needs a prompt", fix='give the prompt, e.g. "summarise"')
        if self.missed not in get_args(Missed):
            raise ConfigError(f"unknown missed-run policy {self.missed!r}",
                              fix="use skip or run_once")
        zone(self.tz)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the API's shape)."""
        return {
            "name": self.name, "owner": self.owner, "prompt": self.prompt,
            "schedule": {"kind": self.schedule.kind, "expr": self.schedule.expr},
            "tz": self.tz, "policy": self.policy.to_dict(),
            "notify": [str(n) for n in self.notify], "missed": self.missed,
            "paused": self.paused,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        """Build from :meth:`to_dict`'s shape."""
        sched = data["schedule"]
        return cls(
            name=data["name"], owner=data["owner"], prompt=data["prompt"],
            schedule=Schedule(sched["kind"], sched.get("expr", "")),
            tz=data.get("tz", "UTC"), policy=TaskPolicy.from_dict(data.get("policy") or {}),
            notify=tuple(NotifyTarget.parse(n) for n in data.get("notify") or ()),
            missed=data.get("missed", "run_once"), paused=bool(data.get("paused", False)),
        )


@dataclass(frozen=True, slots=True)
class Trigger:
    """Why a run started.

    ``fired_at`` is the Unix time the trigger fired (for a clock trigger: the scheduled time,
    which is earlier than now for a missed run). ``detail`` is a short human line ("cron 0 7 * *
    *", "missed while down", "nonce 3f2a..."); ``payload`` is untrusted text the trigger carried
    (a webhook's body, the new file's workspace-relative path), empty for clock triggers.
    """

    kind: TriggerKind
    fired_at: float
    detail: str = ""
    payload: str = ""

    def __post_init__(self) -> None:
        if self.kind not in get_args(TriggerKind):
            raise ConfigError(f"unknown trigger kind {self.kind!r}",
                              fix="use cron, every, at, webhook, file or manual")

    def when(self) -> str:
        """``fired_at`` as an ISO UTC time."""
        return datetime.fromtimestamp(self.fired_at, UTC).isoformat(timespec="seconds")


class RunStarter(Protocol):
    """The run engine seen from the scheduler: start a run and return at once.

    ``start`` must not wait for the run: it records the run, hands it to a worker and returns
    the run's id. It may raise :class:`TaskLimitError` when no run may start now.
    ``active`` counts runs holding a worker (started, not finished, not parked), for one
    owner or (``None``) all of them: the scheduler's concurrency limits read it.
    """

    def start(self, spec: TaskSpec, trigger: Trigger) -> str:
        """Start a run of ``spec`` for ``trigger``; return its run id without waiting."""
        ...

    def active(self, owner: str | None = None) -> int:
        """Count the runs now holding a worker, of ``owner`` or of everyone."""
        ...

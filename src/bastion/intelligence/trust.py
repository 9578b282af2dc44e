"""Earned trust per (subject, tool), from what the audit log says happened.

Trust is a beta reputation (Jøsang & Ismail): ``trust = (1 + good) / (2 + good + bad)``,
where each piece of evidence counts with weight ``w * 0.5 ** (age / half_life)`` so old
evidence fades and trust drifts back to 0.5 (unknown) when a tool is not used. Evidence:

===============================================  =======  ======
event                                            good     bad
===============================================  =======  ======
a human approved the call                        1.0
the call ran without a human (below threshold,   0
trust or a session rule approved it)
the call failed (tool error)                              0.5
a human denied it                                          8.0
the anomaly stage flagged it / intel matched it           4.0
===============================================  =======  ======

Only a human's approval is good evidence. Calls that ran without one say nothing about
whether a human would approve the tool: counting them let a model *farm* trust with a dozen
harmless calls below the threshold and then have MEDIUM calls auto-approved in a session
whose threshold a human had lowered to review exactly those (review F16).

A MEDIUM-risk call (up to ``max_risk``, never CRITICAL) that would have asked a human is
auto-approved when trust >= threshold and there are ``min_observations`` pieces of
evidence. One denial drops trust below any threshold >= 0.6 until it is outweighed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

W_HUMAN_APPROVED = 1.0
W_CLEAN = 0.0  # ran without needing approval: no one judged it
W_AUTO_CLEAN = 0.0  # approved by trust or a session rule: trust must not feed itself
W_ERROR = 0.5
W_DENIED = 8.0
W_FLAGGED = 4.0
TRUST_ACTORS = frozenset({"trust", "session-rule", "auto"})  # approvals no human gave


@dataclass(slots=True)
class _Evidence:
    good: float = 0.0
    bad: float = 0.0
    count: int = 0
    ts: float = 0.0  # the time good/bad were last decayed to
    last_denied: float | None = None


@dataclass(slots=True, frozen=True)
class TrustView:
    """One (subject, tool) row: trust, evidence and whether it auto-approves now."""

    subject: str
    tool: str
    trust: float
    good: float
    bad: float
    observations: int
    auto_approves: bool
    last_denied: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {"subject": self.subject, "tool": self.tool, "trust": round(self.trust, 3),
                "good": round(self.good, 2), "bad": round(self.bad, 2),
                "observations": self.observations, "auto_approves": self.auto_approves,
                "last_denied": self.last_denied}


def evidence_of(decision: str | None, approval: Mapping[str, Any] | None,
                flagged: bool, error: bool) -> tuple[float, float]:
    """Return (good, bad) weights for one call outcome."""
    if flagged:
        return 0.0, W_FLAGGED
    by = str((approval or {}).get("by") or "")
    if decision == "denied":
        # refused by policy/threat without a human: not a statement about trust
        # a human said no; a timeout or the non-interactive default is no one's judgement
        human = approval and not approval.get("approved") and by not in ("default", "timeout")
        return (0.0, W_DENIED) if human else (0.0, 0.0)
    if decision == "error" or error:
        return 0.0, W_ERROR
    if decision == "allowed":
        if approval and approval.get("approved"):
            return (W_AUTO_CLEAN if by in TRUST_ACTORS else W_HUMAN_APPROVED), 0.0
        return W_CLEAN, 0.0
    return 0.0, 0.0



def _now() -> float:
    return time.time()  # looked up per call, so a patched clock (tests) is honoured

class TrustManager:
    """Trust per (subject, tool) with exponential decay; thread-safe."""

    def __init__(self, *, threshold: float = 0.8, min_observations: int = 5,
                 half_life_s: float = 14 * 86400, clock: Callable[[], float] | None = None) -> None:
        self.threshold = threshold
        self.min_observations = min_observations
        self.half_life_s = half_life_s
        self.clock = clock or _now
        self._lock = threading.Lock()
        self._ev: dict[tuple[str, str], _Evidence] = {}

    def _decayed(self, ev: _Evidence, now: float) -> _Evidence:
        if now > ev.ts:
            f = math.pow(0.5, (now - ev.ts) / self.half_life_s)
            ev.good *= f
            ev.bad *= f
            ev.ts = now
        return ev

    def observe(self, subject: str, tool: str, good: float, bad: float, *,
                ts: float | None = None) -> None:
        """Add evidence (at ``ts``, default now)."""
        if not good and not bad:
            return
        now = self.clock() if ts is None else ts
        with self._lock:
            ev = self._ev.setdefault((subject, tool), _Evidence(ts=now))
            if now < ev.ts:  # an older event (replay out of order): decay it to ev.ts
                f = math.pow(0.5, (ev.ts - now) / self.half_life_s)
                good, bad = good * f, bad * f
            else:
                self._decayed(ev, now)
            ev.good += good
            ev.bad += bad
            ev.count += 1
            if bad >= W_DENIED:
                ev.last_denied = max(ev.last_denied or 0.0, now)

    def view(self, subject: str, tool: str) -> TrustView:
        """Return trust now for one (subject, tool)."""
        now = self.clock()
        with self._lock:
            ev = self._ev.get((subject, tool))
            if ev is None:
                return TrustView(subject, tool, 0.5, 0.0, 0.0, 0, False, None)
            self._decayed(ev, now)
            t = (1 + ev.good) / (2 + ev.good + ev.bad)
            ok = t >= self.threshold and ev.count >= self.min_observations
            return TrustView(subject, tool, t, ev.good, ev.bad, ev.count, ok, ev.last_denied)

    def table(self) -> list[TrustView]:
        """Return every row, most trusted first."""
        with self._lock:
            keys = list(self._ev)
        return sorted((self.view(s, t) for s, t in keys), key=lambda v: -v.trust)

    def replay(self, events: Iterable[Any]) -> int:
        """Rebuild trust from audit records (``tool_call`` and flagged ``intel.assessment``)."""
        flagged: set[str] = set()
        calls = []
        for e in events:
            if e.kind == "intel.assessment" and isinstance(e.detail, Mapping) and (
                    e.detail.get("flagged")):
                flagged.add(str(e.detail.get("call_id")))
            elif e.kind == "tool_call" and e.tool:
                calls.append(e)
        n = 0
        for e in calls:
            d = e.detail if isinstance(e.detail, Mapping) else {}
            good, bad = evidence_of(e.decision, d.get("approval"),
                                    str(d.get("call_id")) in flagged, bool(d.get("error")))
            if good or bad:
                self.observe(e.actor or "agent", e.tool, good, bad, ts=float(e.ts))
                n += 1
        return n

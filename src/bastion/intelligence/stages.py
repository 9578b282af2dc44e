"""The two gateway stages this package adds, between risk classification and approval.

``ThreatStage`` scores each call before it runs: anomaly (the subject's isolation forest)
and threat-intel hits, combined into a threat score. ``deny`` refuses the call; ``ask``, a
flagged anomaly, or a cold start with ``cold_start: ask`` mark it as needing approval, so a
human decides (an anomaly is escalated, never silently blocked). Notable calls leave an
``intel.assessment`` audit record with the score and the features that drove it.

``TrustStage`` auto-approves a call that would otherwise wait for a human only for risk
(not an explicit ``ask`` policy, not an anomaly or intel hit), at most ``max_risk`` and never
CRITICAL, when its (subject, tool) trust is high enough; the approval is audited
(``approval.decision`` by ``trust`` with the reason). Both stages learn from each outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bastion.intelligence.anomaly import AnomalyDetector, Assessment
from bastion.intelligence.features import CallView, SubjectState
from bastion.intelligence.feeds import IndicatorIndex
from bastion.intelligence.threat import ThreatScore, score
from bastion.intelligence.trust import TrustManager, evidence_of
from bastion.security.gateway import ApprovalRecord, CallRequest, Next, ToolResult, denied
from bastion.security.recorder import AuditRecorder
from bastion.tools.base import Risk


def _now() -> float:
    return time.time()  # looked up per call, so a patched clock (tests) is honoured

def _drivers_text(a: Assessment) -> str:
    parts = [f"{d.feature}={d.value:.3g} (usual {d.median:.3g})" for d in a.drivers[:3]]
    return ", ".join(parts) or "unusual combination of features"


class ThreatStage:
    """Anomaly + threat intel -> threat score -> allow, ask or deny."""

    def __init__(self, detector: AnomalyDetector | None, index: IndicatorIndex | None,
                 states: dict[str, SubjectState], *, audit: AuditRecorder | None = None,
                 ask_at: float = 60.0, deny_at: float = 90.0, cold_start: str = "allow",
                 clock: Callable[[], float] | None = None) -> None:
        self.detector = detector
        self.index = index
        self.states = states
        self.audit = audit
        self.ask_at = ask_at
        self.deny_at = deny_at
        self.cold_start = cold_start
        self.clock = clock or _now
        self.assessed = 0
        self.flagged = 0

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Assess, then continue, ask or refuse; learn from the outcome."""
        subject = req.actor or "agent"
        args = req.call.arguments if isinstance(req.call.arguments, dict) else {}
        view = CallView(subject, self.clock(), req.tool.name, args)
        state = self.states.setdefault(subject, SubjectState())
        assessment = self.detector.assess(view, state) if self.detector else None
        hits = self.index.match(args) if self.index is not None else []
        threat = score(req.risk, assessment, hits, ask_at=self.ask_at, deny_at=self.deny_at)
        self.assessed += 1
        flagged = bool(assessment and assessment.anomalous)
        cold_ask = bool(assessment and assessment.status == "cold_start"
                        and self.cold_start == "ask")
        info: dict[str, Any] = {"threat": threat.to_dict(),
                                "anomaly": assessment.to_dict() if assessment else None,
                                "flagged": flagged, "subject": subject}
        req.annotations["intel"] = info
        reasons = self._reasons(threat, assessment, flagged, cold_ask)
        req.reasons.extend(reasons)
        if flagged or threat.action != "allow" or cold_ask:
            self.flagged += flagged
            req.needs_approval = True
            self._record(req, info, reasons)
        if threat.action == "deny":
            result = denied(req, f"{req.tool.name} refused: threat score {threat.score:.0f} "
                                 f">= {self.deny_at:g} ({'; '.join(reasons)})")
        else:
            result = await nxt(req)
        state.update(CallView(subject, view.ts, view.tool, args, result.decision))
        return result

    def _reasons(self, t: ThreatScore, a: Assessment | None, flagged: bool, cold_ask: bool
                 ) -> list[str]:
        out = []
        if flagged and a is not None and a.rule == "distance":
            out.append(f"anomaly: distance {a.distance:.1f} >= {a.distance_threshold:.1f} "
                       f"from usual behaviour: {_drivers_text(a)}")
        elif flagged and a is not None:
            out.append(f"anomaly score {a.score:.2f} >= {a.threshold:.2f}: {_drivers_text(a)}")
        for h in t.hits[:3]:
            tags = f" ({', '.join(h.indicator.tags[:2])})" if h.indicator.tags else ""
            out.append(f"threat intel: {h.matched} is listed in feed {h.indicator.feed}{tags}")
        if t.action != "allow":
            out.append(f"threat score {t.score:.0f} (ask at {self.ask_at:g}, "
                       f"deny at {self.deny_at:g})")
        if cold_ask and a is not None:
            out.append(f"anomaly model in cold start ({a.samples}/{a.needed} calls); "
                       "cold_start: ask")
        return out

    def _record(self, req: CallRequest, info: dict[str, Any], reasons: list[str]) -> None:
        if self.audit is not None:
            self.audit.record("intel.assessment", actor="intel", session_id=req.session_id,
                              tool=req.tool.name, decision=info["threat"]["action"],
                              risk=req.risk.name.lower(),
                              detail={**info, "call_id": req.call.id, "reasons": reasons})


class TrustStage:
    """Auto-approve risk-only approvals of trusted (subject, tool) pairs; learn outcomes."""

    def __init__(self, trust: TrustManager, *, default_threshold: Risk,
                 max_risk: Risk = Risk.MEDIUM, audit: AuditRecorder | None = None) -> None:
        self.trust = trust
        self.default_threshold = default_threshold
        self.max_risk = min(max_risk, Risk.HIGH)  # CRITICAL is always asked
        self.audit = audit
        self.auto_approved = 0

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Maybe approve, continue, then add the outcome as evidence."""
        subject = req.actor or "agent"
        tool = req.tool.name
        intel = req.annotations.get("intel") or {}
        suspicious = bool(intel.get("flagged") or (intel.get("threat") or {}).get("hits"))
        # asked only because of risk (not demanded by policy, taint or intel): trust may answer
        risk_only = req.approval_needed(self.default_threshold) and not req.needs_approval
        if risk_only and not suspicious and req.risk <= self.max_risk:
            view = self.trust.view(subject, tool)
            if view.auto_approves:
                reason = (f"trust {view.trust:.2f} >= {self.trust.threshold:.2f} for {subject}/"
                          f"{tool} after {view.observations} observations")
                req.policy_allow = True
                req.approval = ApprovalRecord(True, "trust", reason)
                req.approved_by = "trust"
                req.reasons.append(f"auto-approved: {reason}")
                self.auto_approved += 1
                if self.audit is not None:
                    self.audit.record("approval.decision", actor="trust",
                                      session_id=req.session_id, tool=tool, decision="approved",
                                      risk=req.risk.name.lower(), arguments=req.call.arguments,
                                      detail={"by": "trust", "reason": reason, "scope": "once",
                                              "call_id": req.call.id,
                                              "trust": view.to_dict()})
        result = await nxt(req)
        approval = req.approval.to_dict() if req.approval is not None else None
        good, bad = evidence_of(result.decision, approval,
                                bool(intel.get("flagged")), not result.ok)
        self.trust.observe(subject, tool, good, bad)
        return result

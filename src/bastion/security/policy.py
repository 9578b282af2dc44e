"""Policy and risk stages: per-tool allow/deny/ask rules and the approval threshold."""

from __future__ import annotations

import time
from collections.abc import Mapping

from bastion import telemetry
from bastion.security.approval import ApprovalRequest, Approver, approver_override
from bastion.security.gateway import ApprovalRecord, CallRequest, Next, ToolResult, denied
from bastion.telemetry.metrics import METRICS
from bastion.tools.base import Risk


class PolicyStage:
    """Refuse tools the config denies; mark ``ask`` tools as needing approval."""

    def __init__(self, rules: Mapping[str, str]) -> None:
        self.rules = dict(rules)

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Apply the rule for the call's tool."""
        rule = self.rules.get(req.tool.name, self.rules.get("*", "default"))
        if rule == "deny":
            return denied(req, f"tool {req.tool.name} is denied by policy (security.tools)")
        if rule == "ask":
            req.reasons.append("policy requires approval")
            req.needs_approval = True
        if rule == "allow":
            req.policy_allow = True
        return await nxt(req)


class ApprovalStage:
    """Ask a human (through the configured :class:`Approver`) at or above the threshold."""

    def __init__(self, approver: Approver, threshold: Risk, timeout_s: float) -> None:
        self.approver = approver
        self.threshold = threshold
        self.timeout_s = timeout_s

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Pass low-risk calls, ask for the rest; a timeout is a deny.

        The threshold is the session's when the risk stage set one (``risk_threshold``);
        :meth:`CallRequest.approval_needed` decides.
        """
        if not req.approval_needed(self.threshold):
            return await nxt(req)
        threshold = req.threshold(self.threshold)
        if req.risk >= threshold:
            req.reasons.append(f"risk {req.risk.name} >= threshold {threshold.name}")
        ask = ApprovalRequest(
            tool=req.tool.name,
            arguments=req.call.arguments,
            risk=req.risk,
            reasons=list(req.reasons),
            session_id=req.session_id,
            call_id=req.call.id,
            allow_session_rule=req.taint is None,
        )
        t0 = time.monotonic()
        with telemetry.span("gateway.approval_wait", {"bastion.tool.risk": req.risk.name.lower()}
                            ) as wait:
            approver = approver_override() or self.approver  # an unattended run's own
            decision = await approver.decide(ask, timeout_s=self.timeout_s)
            wait.set("bastion.approval.approved", decision.approved)
            wait.set("bastion.approval.by", decision.by)
        METRICS.approval_wait.observe(time.monotonic() - t0,
                                      outcome="approved" if decision.approved else "denied")
        req.approval = ApprovalRecord(decision.approved, decision.by, decision.reason)
        if not decision.approved:
            why = decision.reason or "not approved"
            return denied(req, f"{req.tool.name} was not approved: {why}")
        req.approved_by = decision.by
        return await nxt(req)

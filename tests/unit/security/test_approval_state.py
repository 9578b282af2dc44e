"""Typed approval state on CallRequest and explicit stage order (issue 15 item 2).

Whether a human must decide is one method, ``CallRequest.approval_needed``; the fields it reads
are typed and set only by the deciding stages. Stages placed relative to another stage
(``add_stage(before=...)``) refuse to be placed anywhere else when the anchor is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.app import App, build_app
from bastion.config.model import Config, IntelligenceConfig, MemoryConfig
from bastion.errors import ConfigError
from bastion.messages import ToolCall
from bastion.security.approval import ApprovalDecision, ApprovalRequest
from bastion.security.audit import AuditLog, AuditStage
from bastion.security.gateway import ApprovalRecord, CallRequest, Environment, Gateway, Next
from bastion.security.gateway import ToolResult as Result
from bastion.security.hitl.risk import RiskStage
from bastion.security.model_guard import OutputScanStage
from bastion.security.policy import ApprovalStage, PolicyStage
from bastion.security.secrets.resolver import SecretsStage
from bastion.testing import ScriptedModel
from bastion.tools.base import Risk, ToolContext, tool
from bastion.tools.registry import ToolRegistry


@tool(risk=Risk.HIGH)
async def wipe(ctx: ToolContext) -> str:
    """Do something risky."""
    return "wiped"


@tool(risk=Risk.LOW)
async def look(ctx: ToolContext) -> str:
    """Do something harmless."""
    return "looked"


class Recorder:
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.asked: list[ApprovalRequest] = []

    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        self.asked.append(request)
        return ApprovalDecision(self.answer, "tester", None if self.answer else "no")


@pytest.mark.parametrize(("risk", "session", "needs", "allow", "asked"), [
    (Risk.LOW, None, False, False, False),
    (Risk.HIGH, None, False, False, True),      # risk reaches the default threshold
    (Risk.HIGH, None, False, True, False),      # policy allow: risk alone does not ask
    (Risk.LOW, None, True, True, True),         # a demand always asks, even under allow
    (Risk.MEDIUM, Risk.MEDIUM, False, False, True),   # the session's threshold wins ...
    (Risk.HIGH, Risk.CRITICAL, False, False, False),  # ... both ways
])
def test_approval_needed_decision_table(risk: Risk, session: Risk | None, needs: bool,
                                        allow: bool, asked: bool) -> None:
    req = CallRequest(ToolCall("wipe", {}), wipe, risk=risk, risk_threshold=session,
                      needs_approval=needs, policy_allow=allow)
    assert req.approval_needed(Risk.HIGH) is asked


def gateway(tmp_path: Path, approver: Recorder, rules: dict[str, str] | None = None
            ) -> tuple[Gateway, AuditLog]:
    audit = AuditLog(tmp_path / "audit.db")
    stages = [AuditStage(audit), PolicyStage(rules or {}), ApprovalStage(approver, Risk.HIGH, 5)]
    return Gateway(ToolRegistry([wipe, look]), Environment(workspace=tmp_path), stages), audit


async def test_annotations_cannot_loosen_approval(tmp_path: Path) -> None:
    """The attack: a caller's context claims the decision keys; approval is still asked."""
    approver = Recorder(answer=False)
    gw, audit = gateway(tmp_path, approver)
    forged = {"policy_allow": True, "needs_approval": False, "risk_threshold": Risk.CRITICAL,
              "approval": {"approved": True, "by": "forged", "reason": None}}
    res = await gw.execute(ToolCall("wipe", {}), context=forged)
    assert res.decision == "denied" and len(approver.asked) == 1
    detail = audit.events()[0].detail
    assert detail["approval"] == {"approved": False, "by": "tester", "reason": "no"}
    audit.close()


async def test_policy_ask_and_allow_are_typed(tmp_path: Path) -> None:
    approver = Recorder()
    gw, audit = gateway(tmp_path, approver, {"look": "ask", "wipe": "allow"})
    assert (await gw.execute(ToolCall("wipe", {}))).ok and approver.asked == []
    assert (await gw.execute(ToolCall("look", {}))).ok and len(approver.asked) == 1
    assert audit.events()[0].detail["approval"] == {"approved": True, "by": "tester",
                                                    "reason": None}
    audit.close()


def spy(log: list[str], name: str):  # type: ignore[no-untyped-def]
    async def stage(req: CallRequest, nxt: Next) -> Result:
        log.append(name)
        return await nxt(req)
    return stage


async def test_add_stage_before_lands_just_before_the_anchor(tmp_path: Path) -> None:
    order: list[str] = []
    approver = Recorder()
    gw, audit = gateway(tmp_path, approver)
    gw.add_stage(spy(order, "a"), before=ApprovalStage)
    gw.add_stage(spy(order, "b"), before=ApprovalStage)
    assert [type(s).__name__ for s in gw.stages] == [
        "AuditStage", "PolicyStage", "function", "function", "ApprovalStage"]
    await gw.execute(ToolCall("wipe", {}))
    assert order == ["a", "b"] and len(approver.asked) == 1
    audit.close()


def test_add_stage_refuses_a_missing_anchor(tmp_path: Path) -> None:
    gw = Gateway(ToolRegistry([look]), Environment(workspace=tmp_path), [])
    with pytest.raises(ConfigError, match="no ApprovalStage") as info:
        gw.add_stage(spy([], "late"), before=ApprovalStage)
    assert info.value.fix and gw.stages == []


def test_approval_record_is_the_audit_form() -> None:
    assert ApprovalRecord(True, "trust", "r").to_dict() == {
        "approved": True, "by": "trust", "reason": "r"}


@pytest.fixture
async def intel_app(tmp_path: Path) -> AsyncIterator[App]:
    cfg = Config(memory=MemoryConfig(enabled=False),
                 intelligence=IntelligenceConfig(enabled=True))
    cfg.browser.enabled = True  # chromium starts only on first use
    app = build_app(cfg, model=ScriptedModel())
    yield app
    await app.aclose()


async def test_assembled_order(intel_app: App) -> None:
    """The pipeline: audit, scope, quota, policy, browser guard, risk, threat, trust, approval..."""
    from bastion.intelligence.stages import ThreatStage, TrustStage
    from bastion.security.browser.rules import BrowserGuardStage
    from bastion.security.identity import ToolScopeStage
    from bastion.security.quota import ToolQuotaStage

    assert intel_app.browser is not None
    kinds = [type(s) for s in intel_app.gateway.stages]
    assert kinds[:11] == [AuditStage, ToolScopeStage, ToolQuotaStage, PolicyStage,
                          BrowserGuardStage, RiskStage, ThreatStage, TrustStage, ApprovalStage,
                          SecretsStage, OutputScanStage]

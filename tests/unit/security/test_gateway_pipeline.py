"""Gateway stages (policy, approval, sandbox refusal, audit) with fake tools and runners."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import ToolError
from bastion.messages import ToolCall
from bastion.security.approval import AllowApprover, ApprovalDecision, ApprovalRequest, DenyApprover
from bastion.security.audit import AuditLog, AuditStage
from bastion.security.gateway import CallRequest, Environment, Gateway, Next, ToolResult
from bastion.security.policy import ApprovalStage, PolicyStage
from bastion.tools.base import Risk, ToolContext, tool
from bastion.tools.builtin import builtin_tools
from bastion.tools.registry import ToolRegistry
from tests.fakes.runner import RecordingRunner

seen: list[ToolContext] = []


@tool(risk=Risk.LOW)
async def echo(ctx: ToolContext, text: str, api_key: str | None = None) -> str:
    """Echo text back."""
    seen.append(ctx)
    return text


@tool(risk=Risk.HIGH)
async def dangerous(ctx: ToolContext) -> str:
    """Do something risky."""
    return "done"


@tool()
async def broken(ctx: ToolContext) -> str:
    """Always fails."""
    raise RuntimeError("boom")


@tool()
async def refuses(ctx: ToolContext) -> str:
    """Raises a tool error."""
    raise ToolError("cannot do that", fix="ask differently")


class CountingApprover:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[ApprovalRequest] = []

    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        self.asked.append(request)
        return ApprovalDecision(self.answer, "tester", None if self.answer else "no")


def make(
    tmp_path: Path,
    rules: dict[str, str] | None = None,
    approver: object = None,
    sandbox: RecordingRunner | None = None,
    problem: str | None = None,
) -> tuple[Gateway, AuditLog]:
    reg = ToolRegistry([echo, dangerous, broken, refuses, *builtin_tools()])
    audit = AuditLog(tmp_path / "audit.db")
    env = Environment(workspace=tmp_path, sandbox=sandbox, sandbox_problem=problem)
    stages = [AuditStage(audit), PolicyStage(rules or {}),
              ApprovalStage(approver or DenyApprover(), Risk.HIGH, 5)]  # type: ignore[arg-type]
    return Gateway(reg, env, stages), audit


async def test_allowed_call_runs_and_is_audited_redacted(tmp_path: Path) -> None:
    gw, audit = make(tmp_path)
    audit.redactor.add_known("sk-abcdefghijklmnop1234")  # a secret bastion holds
    res = await gw.execute(ToolCall("echo", {"text": "hi", "api_key": "sk-abcdefghijklmnop1234"}),
                           session_id="s1")
    assert res.ok and res.text == "hi" and res.decision == "allowed"
    ev = audit.events(session_id="s1")[0]
    assert ev.tool == "echo" and ev.decision == "allowed" and ev.risk == "low"
    assert ev.arguments == {"text": "hi",
                            "api_key": audit.secret_tag("sk-abcdefghijklmnop1234")}
    assert seen[-1].runner is None  # unsandboxed tools never get the sandbox
    audit.close()


async def test_policy_deny_never_runs_the_tool(tmp_path: Path) -> None:
    gw, audit = make(tmp_path, {"echo": "deny"})
    before = len(seen)
    res = await gw.execute(ToolCall("echo", {"text": "hi"}))
    assert not res.ok and res.decision == "denied" and "denied by policy" in res.text
    assert len(seen) == before
    assert '"decision": "denied"' in res.for_model()
    assert audit.events()[0].decision == "denied"
    audit.close()


async def test_wildcard_rule(tmp_path: Path) -> None:
    gw, audit = make(tmp_path, {"*": "deny", "echo": "allow"})
    assert (await gw.execute(ToolCall("echo", {"text": "x"}))).ok
    assert (await gw.execute(ToolCall("read_file", {"path": "x"}))).decision == "denied"
    audit.close()


async def test_high_risk_asks_and_default_denies(tmp_path: Path) -> None:
    gw, audit = make(tmp_path)
    res = await gw.execute(ToolCall("dangerous", {}))
    assert res.decision == "denied" and "not approved" in res.text
    approver = CountingApprover(True)
    gw, audit2 = make(tmp_path / "b", approver=approver)
    res = await gw.execute(ToolCall("dangerous", {}))
    assert res.ok and approver.asked[0].risk is Risk.HIGH
    audit.close()
    audit2.close()


async def test_ask_rule_asks_even_for_low_risk_and_allow_skips_approval(tmp_path: Path) -> None:
    approver = CountingApprover(False)
    gw, audit = make(tmp_path, {"echo": "ask", "dangerous": "allow"}, approver)
    assert (await gw.execute(ToolCall("echo", {"text": "x"}))).decision == "denied"
    assert (await gw.execute(ToolCall("dangerous", {}))).ok
    assert [a.tool for a in approver.asked] == ["echo"]
    audit.close()


async def test_sandboxed_tool_refused_without_sandbox(tmp_path: Path) -> None:
    problem = "bubblewrap is not installed (fix: apt-get install bubblewrap)"
    gw, audit = make(tmp_path, problem=problem)
    res = await gw.execute(ToolCall("shell", {"command": "id"}))
    assert res.decision == "denied" and "apt-get install bubblewrap" in res.text
    audit.close()


async def test_sandboxed_tool_gets_the_sandbox(tmp_path: Path) -> None:
    runner = RecordingRunner()
    gw, audit = make(tmp_path, sandbox=runner)
    res = await gw.execute(ToolCall("shell", {"command": "id"}))
    assert res.ok and runner.calls[0]["argv"] == ["/bin/sh", "-c", "id"]
    audit.close()


async def test_errors_become_results(tmp_path: Path) -> None:
    gw, audit = make(tmp_path)
    unknown = await gw.execute(ToolCall("nope", {}))
    assert unknown.decision == "error" and "unknown tool" in unknown.text
    bad_args = await gw.execute(ToolCall("echo", {"txt": 1}))
    assert bad_args.decision == "error" and "invalid arguments" in bad_args.text
    bug = await gw.execute(ToolCall("broken", {}))
    assert bug.decision == "error" and "RuntimeError: boom" in bug.text
    refused = await gw.execute(ToolCall("refuses", {}))
    assert refused.error == "cannot do that (fix: ask differently)"
    audit.close()


async def test_custom_stage_sees_and_can_refuse(tmp_path: Path) -> None:
    gw, audit = make(tmp_path, approver=AllowApprover())
    order: list[str] = []

    async def spy(req: CallRequest, nxt: Next) -> ToolResult:
        order.append(req.tool.name)
        if req.tool.name == "dangerous":
            from bastion.security.gateway import denied
            return denied(req, "spy says no")
        return await nxt(req)

    gw.add_stage(spy)
    assert (await gw.execute(ToolCall("dangerous", {}))).text == "spy says no"
    assert (await gw.execute(ToolCall("echo", {"text": "a"}))).ok
    assert order == ["dangerous", "echo"]
    assert [e.decision for e in audit.events()] == ["allowed", "denied"]
    audit.close()


@pytest.mark.parametrize("kind", ["none", "firecracker"])
def test_factory_refuses_unknown_or_disabled(kind: str, tmp_path: Path) -> None:
    from bastion.config.model import LimitsConfig
    from bastion.security.sandbox.factory import create_sandbox

    sandbox, problem = create_sandbox(kind, tmp_path, LimitsConfig())
    assert sandbox is None and problem

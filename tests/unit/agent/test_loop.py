"""Unit tests of the agent loop with a scripted model and a real gateway pipeline."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from bastion.agent import Agent, AgentOptions, ToolFinished, ToolStarted, TurnDone, TurnError
from bastion.messages import TextDelta, ToolCall
from bastion.security.approval import AllowApprover, DenyApprover
from bastion.security.audit import AuditLog, AuditStage
from bastion.security.gateway import Environment, Gateway
from bastion.security.policy import ApprovalStage, PolicyStage
from bastion.testing import Reply, ScriptedModel, call, say
from bastion.tools.base import Risk, ToolContext, tool
from bastion.tools.registry import ToolRegistry


@tool()
async def add(ctx: ToolContext, a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@tool()
async def slow(ctx: ToolContext, seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@tool(risk=Risk.HIGH)
async def nuke(ctx: ToolContext) -> str:
    """Do something risky."""
    return "boom"


@tool()
async def broken(ctx: ToolContext) -> str:
    """Raise."""
    raise RuntimeError("tool bug")


def make_agent(tmp_path: Path, model: ScriptedModel, *, approver=None, rules=None, steps=4):
    reg = ToolRegistry([add, slow, nuke, broken])
    audit = AuditLog(tmp_path / "audit.db")
    gw = Gateway(
        reg,
        Environment(workspace=tmp_path),
        [
            AuditStage(audit),
            PolicyStage(rules or {}),
            ApprovalStage(approver or DenyApprover(), Risk.HIGH, 5),
        ],
    )
    return Agent(model, gw, AgentOptions("sys", max_steps=steps)), audit


async def collect(agent: Agent, text: str, sid: str = "s1") -> list[object]:
    return [ev async for ev in agent.run(text, session_id=sid)]


async def test_plain_answer_streams_and_finishes(tmp_path: Path) -> None:
    agent, _ = make_agent(tmp_path, ScriptedModel(say("hello there")))
    events = await collect(agent, "hi")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hello there"
    done = events[-1]
    assert isinstance(done, TurnDone) and done.answer == "hello there" and done.steps == 1


async def test_tool_call_result_goes_back_to_model(tmp_path: Path) -> None:
    model = ScriptedModel(call("add", a=2, b=3), say("It is 5."))
    agent, audit = make_agent(tmp_path, model)
    events = await collect(agent, "2+3?")
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert finished[0].result.ok and finished[0].result.text == "5"
    second = model.seen[1].messages
    assert second[-1].role == "tool" and second[-1].content == "5"
    assert second[-2].tool_calls[0].name == "add"
    assert isinstance(events[-1], TurnDone) and events[-1].answer == "It is 5."
    rec = audit.events(tool="add")
    assert rec and rec[0].decision == "allowed" and rec[0].arguments == {"a": 2, "b": 3}


async def test_independent_calls_run_concurrently(tmp_path: Path) -> None:
    two = Reply(calls=[ToolCall("slow", {"seconds": 0.3}), ToolCall("slow", {"seconds": 0.3})])
    agent, _ = make_agent(tmp_path, ScriptedModel(two, say("done")))
    loop = asyncio.get_running_loop()
    start = loop.time()
    events = await collect(agent, "wait twice")
    elapsed = loop.time() - start
    assert len([e for e in events if isinstance(e, ToolStarted)]) == 2
    assert elapsed < 0.55  # sequential would take >= 0.6 s


async def test_high_risk_denied_without_approver(tmp_path: Path) -> None:
    agent, audit = make_agent(tmp_path, ScriptedModel(call("nuke"), say("could not")))
    events = await collect(agent, "do it")
    res = next(e for e in events if isinstance(e, ToolFinished)).result
    assert not res.ok and res.decision == "denied" and "not approved" in res.text
    assert audit.events(tool="nuke")[0].decision == "denied"


async def test_high_risk_runs_when_approved(tmp_path: Path) -> None:
    model = ScriptedModel(call("nuke"), say("ok"))
    agent, _ = make_agent(tmp_path, model, approver=AllowApprover())
    events = await collect(agent, "do it")
    assert next(e for e in events if isinstance(e, ToolFinished)).result.text == "boom"


async def test_policy_deny(tmp_path: Path) -> None:
    agent, _ = make_agent(
        tmp_path, ScriptedModel(call("add", a=1, b=1), say("no")), rules={"add": "deny"}
    )
    events = await collect(agent, "1+1")
    res = next(e for e in events if isinstance(e, ToolFinished)).result
    assert res.decision == "denied" and "denied by policy" in res.text


async def test_tool_errors_are_structured_for_the_model(tmp_path: Path) -> None:
    model = ScriptedModel(call("broken"), call("add", a="x", b=1), call("nope"), say("sorry"))
    agent, _ = make_agent(tmp_path, model)
    events = await collect(agent, "go")
    results = [e.result for e in events if isinstance(e, ToolFinished)]
    assert [r.ok for r in results] == [False, False, False]
    assert "tool bug" in results[0].text
    assert "invalid arguments for add" in results[1].text
    assert "unknown tool 'nope'" in results[2].text
    assert '"error"' in model.seen[1].messages[-1].content
    assert isinstance(events[-1], TurnDone)


async def test_step_limit_forces_final_answer(tmp_path: Path) -> None:
    model = ScriptedModel(call("add", a=1, b=1), call("add", a=1, b=2), say("final"))
    agent, _ = make_agent(tmp_path, model, steps=2)
    events = await collect(agent, "loop")
    done = events[-1]
    assert isinstance(done, TurnDone) and done.forced_final and done.answer == "final"
    assert model.seen[-1].tools == [] and model.seen[-1].settings.tool_choice == "none"


async def test_invalid_tool_json_retried_then_clear_error(tmp_path: Path) -> None:
    agent, _ = make_agent(tmp_path, ScriptedModel(Reply(fail=True), say("recovered")))
    events = await collect(agent, "x")
    assert isinstance(events[-1], TurnDone) and events[-1].answer == "recovered"
    agent2, _ = make_agent(tmp_path, ScriptedModel(Reply(fail=True), Reply(fail=True)))
    events2 = await collect(agent2, "x")
    assert isinstance(events2[-1], TurnError) and "invalid tool JSON" in events2[-1].message


async def test_multi_turn_keeps_history(tmp_path: Path) -> None:
    model = ScriptedModel(say("Hi Ada"), say("Your name is Ada"))
    agent, _ = make_agent(tmp_path, model)
    await collect(agent, "I am Ada", sid="x")
    await collect(agent, "Who am I?", sid="x")
    roles = [m.role for m in model.seen[1].messages]
    assert roles == ["system", "user", "assistant", "user"]


async def test_cancellation_stops_turn(tmp_path: Path) -> None:
    agent, _ = make_agent(tmp_path, ScriptedModel(call("slow", seconds=10), say("never")))

    async def run() -> None:
        await collect(agent, "wait")

    task = asyncio.ensure_future(run())
    await asyncio.sleep(0.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()

"""The run engine in process: budgets, egress allowlist, parking holds no worker, no CRITICAL rule.

A real assembled app (``build_app``: audit log, approval manager, gateway stages) with the
scripted model; the live-server behaviour (notifications, restarts, receipts over the CLI) is in
``tests/integration/tasks/test_runs_live.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bastion.app import App, build_app
from bastion.config.model import ApiConfig, Config, EgressConfig, MemoryConfig
from bastion.crypto.keys import fingerprint
from bastion.security.approval import ApprovalParked, ApprovalRequest
from bastion.tasks.park import RunRecord, RunStore
from bastion.tasks.receipt import verify_receipt
from bastion.tasks.runs import RunApprover, RunEngine
from bastion.tasks.spec import AutoApprove, Schedule, TaskPolicy, TaskSpec, Trigger
from bastion.testing.model import Reply, ScriptedModel, call, say
from bastion.tools.base import Risk


@pytest.fixture
async def engine_for(bastion_home: Path) -> AsyncIterator[Callable[..., RunEngine]]:
    made: list[tuple[App, RunEngine]] = []

    def make(*replies: Reply, tools: dict[str, str] | None = None) -> RunEngine:
        config = Config(api=ApiConfig(token="t" * 32), memory=MemoryConfig(enabled=False))
        config.security.sandbox = "none"
        config.security.tools = tools or {}  # type: ignore[assignment]
        app = build_app(config, model=ScriptedModel(*replies))
        engine = RunEngine(app, RunStore(bastion_home / "runs.db"))
        engine.open()
        made.append((app, engine))
        return engine

    yield make
    for app, engine in made:
        await engine.aclose()
        await app.aclose()


def _spec(name: str, policy: TaskPolicy) -> TaskSpec:
    return TaskSpec(name, "admin", "do it", Schedule("manual"), policy=policy)


async def _until(engine: RunEngine, run_id: str, *states: str, timeout: float = 10
                 ) -> RunRecord:
    deadline = time.monotonic() + timeout
    while True:
        run = engine.get(run_id)
        assert run is not None
        if run.status in states:
            return run
        assert time.monotonic() < deadline, run.summary()
        await asyncio.sleep(0.01)


async def test_the_token_budget_stops_the_run_with_the_numbers(
        engine_for: Callable[..., RunEngine]) -> None:
    engine = engine_for(say("one two three four five six seven eight"))
    run_id = engine.start(_spec("tokens", TaskPolicy(max_tokens=3)), Trigger("manual", 0.0))
    run = await _until(engine, run_id, "done", "failed")
    assert run.status == "failed"
    assert run.reason is not None and run.reason.startswith("token budget exceeded: ")
    assert run.reason.endswith("tokens used, the task allows 3")


async def test_a_host_outside_the_egress_allowlist_is_refused_before_the_tool(
        engine_for: Callable[..., RunEngine]) -> None:
    engine = engine_for(call("web_fetch", url="https://evil.example/x"), say("ok"),
                        tools={"web_fetch": "allow"})
    # web_fetch's own allowlist is inside the task's, so the arguments decide
    engine.app.config.security.egress["web_fetch"] = EgressConfig(domains=["good.example"])
    policy = TaskPolicy(egress=("good.example", "*.good.example"))
    run_id = engine.start(_spec("egress", policy), Trigger("manual", 0.0))
    run = await _until(engine, run_id, "done", "failed")
    assert run.status == "done" and run.receipt is not None
    [entry] = run.receipt["tool_calls"]
    assert (entry["tool"], entry["decision"]) == ("web_fetch", "denied")
    events = engine.app.audit.events(session_id=run.session_id, kind="tool_call")
    assert events[0].result == ("web_fetch refused: evil.example is not in task egress's "
                                "egress allowlist")
    assert verify_receipt(run.receipt, engine.app.audit.path).ok


async def test_a_tool_whose_sandbox_may_reach_more_than_the_task_allows_is_refused(
        engine_for: Callable[..., RunEngine]) -> None:
    """The arguments are not the whole story: a shell's code reaches whatever its sandbox's
    egress allows, so a task's egress list must cover the sandbox's (else the call is refused
    before it runs); a sandbox inside the task's list runs."""
    from bastion.tasks.runs import ANY, _wider_egress

    assert _wider_egress(None, ("a.example",)) is None
    assert _wider_egress(EgressConfig(domains=["a.example", "x.b.example"]),
                         ("a.example", "*.b.example")) is None
    assert _wider_egress(EgressConfig(domains=["*.b.example"]), ("x.b.example",)) == "*.b.example"
    assert _wider_egress(EgressConfig(cidrs=["10.0.0.0/8"]), ("*",)) == "raw addresses (10.0.0.0/8)"
    assert _wider_egress(ANY, ("*",)) == "any public address"

    wide = EgressConfig(domains=["api.good.example", "pypi.org"])
    engine = engine_for(call("shell", command="echo no url here"), say("ok"),
                        tools={"shell": "allow"})
    engine.app.config.security.egress["shell"] = wide
    run_id = engine.start(_spec("wide", TaskPolicy(egress=("api.good.example",))),
                          Trigger("manual", 0.0))
    run = await _until(engine, run_id, "done", "failed")
    [entry] = run.receipt["tool_calls"] if run.receipt else [None]  # refused, never run
    assert entry is not None and (entry["tool"], entry["decision"]) == ("shell", "denied")
    events = engine.app.audit.events(session_id=run.session_id, kind="tool_call")
    assert events[0].result == (
        "shell refused: it may reach pypi.org, outside task wide's egress allowlist "
        "(narrow security.egress.shell or widen the task's egress)")

    # a tool whose sandbox stays inside the task's list runs (list_files needs no sandbox
    # with security.sandbox none; the guard reads the egress configured for it)
    narrow = engine_for(call("list_files", path="."), say("ok"), tools={"list_files": "allow"})
    narrow.app.config.security.egress["list_files"] = EgressConfig(domains=["api.good.example"])
    run_id = narrow.start(_spec("narrow", TaskPolicy(egress=("*.good.example",))),
                          Trigger("manual", 0.0))
    run = await _until(narrow, run_id, "done", "failed")
    assert run.receipt is not None
    assert [(c["tool"], c["decision"]) for c in run.receipt["tool_calls"]] == [
        ("list_files", "allowed")]

    # web_fetch with no allowlist of its own follows redirects anywhere: refused in the task
    fetch = engine_for(call("web_fetch", url="https://api.good.example/x"), say("ok"),
                       tools={"web_fetch": "allow"})
    run_id = fetch.start(_spec("fetch", TaskPolicy(egress=("*.good.example",))),
                         Trigger("manual", 0.0))
    run = await _until(fetch, run_id, "done", "failed")
    events = fetch.app.audit.events(session_id=run.session_id, kind="tool_call")
    assert events[0].result == (
        "web_fetch refused: it may reach any public address, outside task fetch's egress "
        "allowlist (narrow security.egress.web_fetch or widen the task's egress)")


async def test_a_parked_run_holds_no_worker_and_resumes_on_allow(
        engine_for: Callable[..., RunEngine]) -> None:
    engine = engine_for(call("write_file", path="a.txt", content="x"), say("written"),
                        tools={"write_file": "ask"})
    run_id = engine.start(_spec("park", TaskPolicy()), Trigger("manual", 0.0))
    run = await _until(engine, run_id, "parked")
    await asyncio.sleep(0.05)
    assert engine.active() == 0 and not engine._jobs  # nothing runs or waits for it
    assert engine.app.hitl is not None
    [pending] = engine.app.hitl.pending()
    assert pending.id == run.parked[0].approval_id and pending.request.tool == "write_file"
    assert engine.app.hitl.resolve(pending.id, True, by="tester")
    run = await _until(engine, run_id, "done", "failed")
    assert run.status == "done" and run.answer == "written"
    assert run.receipt is not None and run.receipt["tool_calls"][0]["approver"] == "tester"


async def test_critical_is_never_auto_approved() -> None:
    with pytest.raises(Exception, match="CRITICAL"):
        AutoApprove("shell", Risk.CRITICAL)
    run = RunRecord("r" * 16, "t", "admin", {}, {}, "running", 0.0)
    approver = RunApprover(run, TaskPolicy(auto_approve=(AutoApprove("*", Risk.HIGH),)))
    ask = ApprovalRequest("shell", {"command": "rm -rf /"}, Risk.CRITICAL, call_id="c1")
    with pytest.raises(ApprovalParked):
        await approver.decide(ask, timeout_s=1)
    high = ApprovalRequest("shell", {"command": "x"}, Risk.HIGH, call_id="c2")
    assert (await approver.decide(high, timeout_s=1)).by == "task-rule:t"


async def test_a_tampered_receipt_or_audit_log_fails_verification(
        engine_for: Callable[..., RunEngine]) -> None:
    engine = engine_for(call("list_files", path="."), say("listed"))
    run_id = engine.start(_spec("verify", TaskPolicy()), Trigger("manual", 0.0))
    run = await _until(engine, run_id, "done", "failed")
    assert run.receipt is not None
    db = engine.app.audit.path
    assert verify_receipt(run.receipt, db).ok
    pin = fingerprint(run.receipt["signature"]["public_key"], 64)
    assert verify_receipt(run.receipt, db, [pin]).ok
    assert verify_receipt(run.receipt, db, ["0" * 32]).line == (
        "FAILED: the receipt is signed by a key the audit log does not trust")
    swapped = dict(run.receipt, tool_calls=[])  # a receipt hiding its calls
    assert verify_receipt(swapped, db).line == (
        "FAILED: the receipt's signature does not match its contents (it was altered)")
    engine.app.audit.flush()
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE events SET result = 'nothing here' WHERE kind = 'tool_call'")
    con.close()
    line = verify_receipt(run.receipt, db).line
    assert line.startswith("FAILED: the audit log does not verify: FAILED at record "), line


async def test_run_stages_stay_off_the_apps_gateway_and_the_events_stream_shows_parks(
        engine_for: Callable[..., RunEngine]) -> None:
    engine = engine_for(call("write_file", path="b.txt", content="y"), say("ok"),
                        tools={"write_file": "ask"})
    again = RunEngine(engine.app, engine.store)
    again.open()  # what a second lifespan of the same app does
    kinds = [type(s).__name__ for s in engine.app.gateway.stages]  # other turns: no run stages
    assert "RunGuardStage" not in kinds and "JournalStage" not in kinds
    run_kinds = [type(s).__name__ for s in again._agent(TaskPolicy()).gateway.stages]
    assert run_kinds[-1] == "JournalStage"
    assert run_kinds.index("RunGuardStage") == run_kinds.index("ApprovalStage") - 1
    assert engine.app.hitl is not None
    events = engine.app.hitl.events()
    first = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    run_id = again.start(_spec("stream", TaskPolicy()), Trigger("manual", 0.0))
    event = await asyncio.wait_for(first, 10)  # the normal approvals stream carries it
    assert event["type"] == "approval_pending" and event["tool"] == "write_file"
    await events.aclose()  # type: ignore[attr-defined]
    run = await _until(again, run_id, "parked")
    assert event["id"] == run.parked[0].approval_id


async def test_max_steps_forces_the_answer_and_says_so(
        engine_for: Callable[..., RunEngine]) -> None:
    engine = engine_for(call("list_files", path="."), say("forced answer"))
    run_id = engine.start(_spec("steps", TaskPolicy(max_steps=1)), Trigger("manual", 0.0))
    run = await _until(engine, run_id, "done", "failed")
    assert (run.status, run.answer) == ("done", "forced answer")
    assert run.reason == "max steps (1) reached: the answer was forced without tools"

"""Traces of an agent turn (scripted model, real gateway stages) sent to a real OTLP receiver."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion import telemetry
from bastion.agent import Agent, AgentOptions, TurnDone
from bastion.security.approval import AllowApprover
from bastion.security.audit import AuditLog, AuditStage
from bastion.security.gateway import Environment, Gateway
from bastion.security.policy import ApprovalStage, PolicyStage
from bastion.telemetry.metrics import METRICS
from bastion.testing import ScriptedModel, call, say
from bastion.tools.base import Risk, ToolContext, tool
from bastion.tools.registry import ToolRegistry
from tests.fakes.otlp_receiver import OtlpReceiver, children, one, tree

ROOT = Path(__file__).resolve().parents[3]


@tool(risk=Risk.HIGH)
async def launch(ctx: ToolContext, target: str) -> str:
    """Launch something risky."""
    return f"launched {target}"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        try:
            yield rx
        finally:
            telemetry.shutdown()


def _agent(tmp_path: Path, model: ScriptedModel, rules: dict[str, str] | None = None) -> Agent:
    audit = AuditLog(tmp_path / "audit.db")
    gw = Gateway(ToolRegistry([launch]), Environment(workspace=tmp_path), [
        AuditStage(audit), PolicyStage(rules or {}),
        ApprovalStage(AllowApprover(), Risk.HIGH, 5)])
    return Agent(model, gw, AgentOptions("sys"))


async def test_a_turn_is_one_trace_with_model_tool_and_stage_spans(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    assert telemetry.configure(receiver.endpoint)
    agent = _agent(tmp_path, ScriptedModel(call("launch", target="moon"), say("done")))
    before = METRICS.tool_calls.get(tool="launch", decision="allowed")
    events = [ev async for ev in agent.run("go", session_id="sess1")]
    assert isinstance(events[-1], TurnDone)
    telemetry.shutdown()  # flushes the batch

    spans = receiver.wait_for(lambda s: any(x.name == "invoke_agent bastion" for x in s))
    turn = one(spans, "invoke_agent bastion")
    assert turn.parent_id == "" and {s.trace_id for s in spans} == {turn.trace_id}
    assert turn.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert turn.attributes["gen_ai.conversation.id"] == "sess1"
    assert turn.attributes["bastion.turn.outcome"] == "done"
    assert turn.resource["service.name"] == "bastion"
    kids = [s.name for s in children(spans, turn)]
    assert kids == ["memory.context", "chat scripted", "execute_tool launch",
                    "memory.context", "chat scripted"], kids
    chat = children(spans, turn)[1]
    assert chat.kind == 3  # SPAN_KIND_CLIENT
    assert chat.attributes["gen_ai.request.model"] == "scripted"
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    tool_span = one(spans, "execute_tool launch")
    assert tool_span.attributes["gen_ai.tool.name"] == "launch"
    assert tool_span.attributes["bastion.gateway.decision"] == "allowed"
    stages = children(spans, tool_span)
    assert tree(spans, tool_span) == ("execute_tool launch", [
        ("gateway.audit", []), ("gateway.policy", []),
        ("gateway.approval", [("gateway.approval_wait", [])]),  # the wait: its stage's child
        ("gateway.tool_run", [])])
    assert [s.attributes.get("bastion.gateway.decision") for s in stages] == [
        "pass", "pass", "pass", "allowed"]
    wait = one(spans, "gateway.approval_wait")
    assert wait.attributes["bastion.approval.approved"] is True
    # the wait lies inside the approval stage; stage spans do not overlap
    assert stages[2].start_ns <= wait.start_ns <= wait.end_ns <= stages[2].end_ns
    assert stages[2].end_ns <= stages[3].start_ns
    # no prompt or tool content unless telemetry.record_content
    content = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments",
               "gen_ai.tool.call.result"}
    assert not content & {k for s in spans for k in s.attributes}
    assert METRICS.tool_calls.get(tool="launch", decision="allowed") == before + 1


async def test_a_refusing_stage_carries_the_decision(tmp_path: Path,
                                                     receiver: OtlpReceiver) -> None:
    telemetry.configure(receiver.endpoint)
    agent = _agent(tmp_path, ScriptedModel(call("launch", target="x"), say("ok")),
                   rules={"launch": "deny"})
    [ev async for ev in agent.run("go")]
    telemetry.shutdown()
    spans = receiver.wait_for(lambda s: any(x.name == "execute_tool launch" for x in s))
    tool_span = one(spans, "execute_tool launch")
    assert tool_span.attributes["bastion.gateway.decision"] == "denied"
    stages = children(spans, tool_span)
    assert [(s.name, s.attributes["bastion.gateway.decision"]) for s in stages] == [
        ("gateway.audit", "pass"), ("gateway.policy", "denied")]


def test_off_by_default_imports_no_sdk(tmp_path: Path) -> None:
    # (fastapi itself imports the opentelemetry *API*; the SDK and exporters stay out)
    code = textwrap.dedent("""
        import asyncio, sys
        from tests.unit.telemetry.test_tracing import _agent
        from bastion.testing import ScriptedModel, call, say
        from pathlib import Path
        agent = _agent(Path(sys.argv[1]), ScriptedModel(call("launch", target="m"), say("ok")))
        async def main():
            return [ev async for ev in agent.run("go")]
        asyncio.run(main())
        import bastion.server.app, bastion.llm.http, bastion.app
        bastion.server.app.create_app
        print(sorted(m for m in sys.modules if m.startswith(
            ("opentelemetry.sdk", "opentelemetry.exporter", "bastion.telemetry._otel"))))
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}/src:{ROOT}",
           "BASTION_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


async def test_cluster_attempts_carry_the_node_and_the_failover_reason(
    receiver: OtlpReceiver,
) -> None:
    from tests.fakes.cluster_nodes import Behaviour
    from tests.unit.cluster.test_failover import cluster, collect

    telemetry.configure(receiver.endpoint)
    model, _ = cluster(Behaviour(fail="connect"), Behaviour())
    for _ in range(20):  # until the router happens to try the dead node first
        with telemetry.span("request"):
            await collect(model)
        if len(model.history[-1].nodes) == 2:
            break
    assert model.history[-1].nodes == ["n0", "n1"]
    telemetry.shutdown()
    spans = receiver.wait_for(lambda s: any(x.name == "cluster.attempt n1" for x in s))
    last = [s for s in spans if s.name == "request"][-1]
    attempts = children(spans, last)
    assert [s.name for s in attempts] == ["cluster.attempt n0", "cluster.attempt n1"]
    failed, ok = attempts
    assert failed.attributes["bastion.cluster.node"] == "n0"
    assert failed.attributes["bastion.cluster.failure_kind"] == "hard"
    assert failed.attributes["bastion.cluster.failover_reason"] and failed.status == 2
    assert ok.status == 0 and "bastion.cluster.failover_reason" not in ok.attributes


async def test_voice_stt_and_tts_are_spans(receiver: OtlpReceiver) -> None:
    from tests.unit.voice._shared import espeak, shared_service

    service = shared_service()  # loaded once for every voice test of the session
    telemetry.configure(receiver.endpoint)
    pieces = [a async for a in service.synthesize("Hello there.", engine="espeak")]
    heard = await service.transcribe(espeak("open the pod bay doors"))
    telemetry.shutdown()
    assert pieces and "pod" in heard.text.lower()
    spans = receiver.wait_for(lambda s: len(s) >= 2)
    tts, stt = one(spans, "voice.tts"), one(spans, "voice.stt")
    assert tts.attributes["bastion.voice.engine"] == "espeak"
    assert tts.attributes["bastion.voice.audio_seconds"] > 0
    assert stt.attributes["bastion.voice.audio_seconds"] > 0
    assert stt.attributes["bastion.voice.speech"] is True
    assert "open the pod" not in str(stt.attributes)  # what was said is content: not recorded


def test_without_the_extra_the_error_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "bastion.telemetry._otel", raising=False)
    with pytest.raises(MissingExtraError) as info:
        telemetry.configure("http://127.0.0.1:4318")
    assert info.value.fix == "pip install 'bastion[telemetry]'"
    assert "OpenTelemetry traces" in info.value.message and not telemetry.enabled()


def test_standard_otel_variables_switch_traces_on_and_off(
    monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not telemetry.configure(None)
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-agent")
    assert telemetry.configure(None)
    with telemetry.span("probe"):
        pass
    telemetry.shutdown()
    span = one(receiver.wait_for(lambda s: bool(s)), "probe")
    assert span.resource["service.name"] == "edge-agent"

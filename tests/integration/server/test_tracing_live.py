"""Traces and metrics of a live ``python -m bastion serve`` sent to a real OTLP receiver.

The model is the scripted OpenAI-compatible server (it asks for a ``shell`` call); the call
runs through the served app's gateway (policy ``ask``: a human approves it over the API) in
real bubblewrap; the spans arrive over OTLP/HTTP at the receiver the test starts.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan, children, one, tree
from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.server.test_live_server import approve_all, serving

TOKEN = "trace-live-test-token-0123456789abcdef"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"

STAGES = [  # the served app's gateway, in order (a stage's span ends when it hands on)
    ("gateway.audit", []), ("gateway.tool_scope", []), ("gateway.tool_quota", []),
    ("gateway.policy", []), ("gateway.risk", []),
    ("gateway.approval", [("gateway.approval_wait", [])]), ("gateway.secrets", []),
    ("gateway.undo", []), ("gateway.tool_run", [("sandbox.start", [])]), ("gateway.scan", []),
]

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


@dataclass
class Served:
    base: str
    fake: FakeOpenAIServer
    receiver: OtlpReceiver
    workspace: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=120,
                            headers={"Authorization": f"Bearer {TOKEN}"})


def _serve(home: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch,
           telemetry: dict[str, object]) -> Iterator[Served]:
    ws = tmp / "workspace"
    ws.mkdir()
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within 0.1 s (SDK variable)
    with FakeOpenAIServer() as fake, OtlpReceiver() as receiver:
        (home / "bastion.yaml").write_text(yaml.safe_dump({
            "model": {"backend": "openai", "base_url": fake.base_url, "name": "fake",
                      "native_tools": True},
            "api": {"token": TOKEN},
            "agent": {"workspace": str(ws)},
            "memory": {"enabled": True, "semantic": False},
            "security": {"sandbox": "bubblewrap", "tools": {"shell": "ask"}},
            "intelligence": {"enabled": False},
            "telemetry": {"otlp_endpoint": receiver.endpoint, **telemetry},
        }))
        stop = threading.Event()
        with serving(home) as base:
            threading.Thread(target=approve_all, args=(base, TOKEN, stop), daemon=True).start()
            try:
                yield Served(base, fake, receiver, ws)
            finally:
                stop.set()


@pytest.fixture
def served(bastion_home: Path, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from _serve(bastion_home, tmp_path, monkeypatch, {})


def _turn_done(spans: list[ReceivedSpan]) -> bool:
    return any(s.name == "invoke_agent bastion" for s in spans)


def test_a_served_turn_with_a_tool_call_is_one_trace(served: Served) -> None:
    with served.api() as api:
        r = api.post("/v1/sessions/traced/messages",
                     json={"content": "run shell: echo secret-free-output", "stream": False},
                     headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"})
        assert r.status_code == 200, r.text
        assert r.json()["answer"] == "The tool said: exit_code: 0"
        metrics = api.get("/metrics").text
    spans = served.receiver.wait_for(_turn_done)

    # the turn continues the client's trace (W3C traceparent on the API)
    turn = one(spans, "invoke_agent bastion")
    assert (turn.trace_id, turn.parent_id) == (TRACE_ID, CLIENT_SPAN)
    assert {s.trace_id for s in spans} == {TRACE_ID}
    assert turn.attributes["bastion.turn.outcome"] == "done"
    assert turn.resource["service.name"] == "bastion"
    kids = children(spans, turn)

    # the whole tree: the turn; its model calls and its gateway call; one span per stage;
    # the approval wait inside the approval stage, the sandbox start inside the tool run
    assert tree(spans, turn) == ("invoke_agent bastion", [
        ("memory.context", []), ("chat fake", []),
        ("execute_tool shell", STAGES),
        ("memory.context", []), ("chat fake", [])]), tree(spans, turn)

    # each model call: GenAI attributes; its HTTP request carried the chat span's context
    chats = [s for s in kids if s.name == "chat fake"]
    for chat, headers in zip(chats, served.fake.headers, strict=True):
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "fake"
        assert headers["traceparent"] == f"00-{TRACE_ID}-{chat.span_id}-01"

    # the gateway call: one child span per stage, with its decision
    call = one(spans, "execute_tool shell")
    assert call.attributes["gen_ai.tool.name"] == "shell"
    assert call.attributes["bastion.gateway.decision"] == "allowed"
    stages = {s.name: s for s in children(spans, call)}
    assert stages["gateway.policy"].attributes["bastion.gateway.decision"] == "pass"
    assert stages["gateway.tool_run"].attributes["bastion.gateway.decision"] == "allowed"
    wait = one(spans, "gateway.approval_wait")  # inside the approval stage's time
    assert wait.attributes["bastion.approval.approved"] is True
    assert stages["gateway.approval"].start_ns <= wait.start_ns <= wait.end_ns <= stages[
        "gateway.approval"].end_ns
    start = one(spans, "sandbox.start")  # inside the tool run
    assert start.attributes["bastion.sandbox.backend"] == "bubblewrap"
    run = stages["gateway.tool_run"]
    assert run.start_ns <= start.start_ns <= start.end_ns <= run.end_ns

    # no prompt or tool content by default
    raw = b"".join(served.receiver.raw)
    assert b"secret-free-output" not in raw and b"run shell" not in raw

    # a streamed turn (SSE) continues its caller's trace too
    other = "0af7651916cd43dd8448eb211c80319c"
    with served.api() as api, api.stream(
            "POST", "/v1/sessions/traced/messages", json={"content": "hello", "stream": True},
            headers={"traceparent": f"00-{other}-b7ad6b7169203331-01"}) as resp:
        assert resp.status_code == 200
        assert "echo: hello" in "".join(resp.iter_text()).replace('", "', "")
    spans = served.receiver.wait_for(
        lambda s: any(x.name == "invoke_agent bastion" and x.trace_id == other for x in s))
    streamed = [s for s in spans if s.name == "invoke_agent bastion" and s.trace_id == other]
    assert streamed[0].parent_id == "b7ad6b7169203331"

    # process metrics on /metrics (no cluster configured)
    assert 'bastion_turns_total{outcome="done"} 1' in metrics
    assert 'bastion_tool_calls_total{decision="allowed",tool="shell"} 1' in metrics
    assert 'bastion_approval_wait_seconds_count{outcome="approved"} 1' in metrics
    assert re.search(r'bastion_sandbox_start_seconds_count\{backend="bubblewrap"\} [1-9]',
                     metrics)
    assert re.search(r"bastion_model_tokens_per_second_count [1-9]", metrics) or (
        "bastion_model_tokens_total" in metrics)


@pytest.mark.real_model
def test_a_turn_on_the_shipped_model_is_traced(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.integration.server.test_live_server import _bastion

    home = tmp_path / "home"
    home.mkdir()
    init = _bastion("init", "--yes", home=home)
    assert init.returncode == 0, init.stderr
    workspace = home / "workspace"
    workspace.mkdir(exist_ok=True)
    for name in ("alpha.txt", "beta.txt", "gamma.txt"):
        (workspace / name).write_text(name)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    with OtlpReceiver() as receiver:
        cfg = yaml.safe_load((home / "bastion.yaml").read_text())
        cfg["telemetry"] = {"otlp_endpoint": receiver.endpoint}
        cfg.setdefault("memory", {})["semantic"] = False  # RAG spans: test_retrieval_span.py
        (home / "bastion.yaml").write_text(yaml.safe_dump(cfg))
        token = cfg["api"]["token"]
        with serving(home) as base:
            r = httpx.post(f"{base}/v1/chat/completions", timeout=300,
                           headers={"Authorization": f"Bearer {token}",
                                    "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"},
                           json={"model": "bastion-agent", "messages": [{
                               "role": "user", "content":
                               "List the files in the workspace and say how many there are."}]})
            assert r.status_code == 200, r.text
            metrics = httpx.get(f"{base}/metrics",
                                headers={"Authorization": f"Bearer {token}"}).text
        spans = receiver.wait_for(_turn_done)
    turn = one(spans, "invoke_agent bastion")
    assert (turn.trace_id, turn.parent_id) == (TRACE_ID, CLIENT_SPAN)
    chats = [s for s in children(spans, turn) if s.name.startswith("chat ")]
    assert chats and all(c.attributes["gen_ai.request.model"] for c in chats)
    assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in chats) == turn.attributes[
        "gen_ai.usage.output_tokens"] > 0
    calls = [s for s in children(spans, turn) if s.name.startswith("execute_tool ")]
    assert calls, [s.name for s in spans]  # the shipped model calls list_files here
    stages = [s.name for s in children(spans, calls[0])]
    assert "gateway.policy" in stages and "gateway.tool_run" in stages, stages
    assert re.search(r"bastion_model_tokens_per_second_count [1-9]", metrics)

"""Approval flows over the real API (uvicorn on loopback): the stream shows the wait,
approve/deny with a reason, "allow for this session", per-session thresholds, timeout = deny."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from bastion.app import App, build_app
from bastion.config.model import ApiConfig, Config, MemoryConfig
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from bastion.server.app import create_app
from bastion.testing import ScriptedModel, call, say
from tests.sse_contract import check_event

TOKEN = "tok-approvals-5521"
H = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Served:
    url: str
    app: App
    model: ScriptedModel


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve(bastion_home: Path) -> Iterator:  # type: ignore[type-arg]
    if BubblewrapSandbox.available() is not None:
        pytest.skip("bubblewrap unavailable")
    started: list[tuple[uvicorn.Server, threading.Thread, App]] = []

    def start(*replies, timeout_s: float = 30.0) -> Served:  # type: ignore[no-untyped-def]
        config = Config(api=ApiConfig(token=TOKEN), memory=MemoryConfig(semantic=False))
        config.security.approval_timeout_s = timeout_s
        model = ScriptedModel(*replies)
        app = build_app(config, model=model)
        port = _port()
        server = uvicorn.Server(uvicorn.Config(create_app(app), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="on"))
        th = threading.Thread(target=server.run, daemon=True)
        th.start()
        while not server.started:
            time.sleep(0.02)
        started.append((server, th, app))
        return Served(f"http://127.0.0.1:{port}", app, model)

    yield start
    for server, th, app in started:
        server.should_exit = True
        th.join(10)
        app.audit.close()


def _events(resp: httpx.Response) -> Iterator[tuple[str, dict]]:  # type: ignore[type-arg]
    name = None
    for line in resp.iter_lines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and name:
            yield name, json.loads(line.split(":", 1)[1])


def _wait_pending(url: str, n: int = 1) -> list[dict]:  # type: ignore[type-arg]
    for _ in range(500):
        pending = httpx.get(f"{url}/v1/approvals", headers=H).json()["pending"]
        if len(pending) >= n:
            return pending  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise AssertionError("no pending approval appeared")


def test_stream_shows_wait_then_api_approves(serve, bastion_home: Path) -> None:  # type: ignore[no-untyped-def]
    s = serve(call("shell", command="rm -rf ./junk && echo removed"), say("Removed."))
    ws = s.app.gateway.environment.workspace
    (ws / "junk").mkdir()
    seen: list[str] = []
    doc = httpx.get(f"{s.url}/openapi.json", headers=H).json()
    with httpx.stream("POST", f"{s.url}/v1/sessions/s1/messages", headers=H, timeout=60,
                      json={"content": "clean up", "stream": True}) as resp:
        for name, data in _events(resp):
            seen.append(name)
            # each event is what the OpenAPI document says it is, no field undocumented
            check_event(doc, "post", "/v1/sessions/{session_id}/messages", name, data)
            if name == "approval_pending":
                assert data["tool"] == "shell" and data["risk"] == "CRITICAL"
                assert any("destructive" in r for r in data["reasons"])
                assert httpx.get(f"{s.url}/approvals").status_code == 200  # the web page
                r = httpx.post(f"{s.url}/v1/approvals/{data['id']}", headers=H,
                               json={"approve": True, "reason": "junk is scratch"})
                assert r.status_code == 200
            if name == "tool_finished":
                assert data["decision"] == "allowed" and "removed" in data["text"], (
                    data["text"], data["error"])
    assert seen.index("approval_pending") < seen.index("approval_resolved") < seen.index(
        "tool_finished") < seen.index("done")
    assert not (ws / "junk").exists()
    decisions = s.app.audit.events(kind="approval.decision")
    # the api.token is the admin user's key: the record names who decided
    assert decisions[0].decision == "approved" and decisions[0].detail["by"] == "api:admin"
    assert decisions[0].detail["reason"] == "junk is scratch"


def test_deny_with_reason_and_unknown_id(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(call("shell", command="sudo reboot"), say("Not allowed."))
    result: dict = {}  # type: ignore[type-arg]

    def ask() -> None:
        result["body"] = httpx.post(f"{s.url}/v1/sessions/s2/messages", headers=H, timeout=60,
                                    json={"content": "reboot", "stream": False}).json()

    th = threading.Thread(target=ask)
    th.start()
    pending = _wait_pending(s.url)
    assert httpx.post(f"{s.url}/v1/approvals/nope", headers=H,
                      json={"approve": True}).status_code == 404
    assert httpx.post(f"{s.url}/v1/approvals/{pending[0]['id']}",
                      json={"approve": True}).status_code == 401  # token required
    httpx.post(f"{s.url}/v1/approvals/{pending[0]['id']}", headers=H,
               json={"approve": False, "reason": "not on a weekday"})
    th.join(60)
    step = result["body"]["tool_steps"][0]
    assert step["decision"] == "denied" and "not on a weekday" in step["error"]


def test_timeout_is_deny(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(call("shell", command="rm -rf ./x"), say("Timed out."), timeout_s=0.5)
    body = httpx.post(f"{s.url}/v1/sessions/s3/messages", headers=H, timeout=60,
                      json={"content": "go", "stream": False}).json()
    step = body["tool_steps"][0]
    assert step["decision"] == "denied" and "timeout" in step["error"]
    d = s.app.audit.events(kind="approval.decision")[0]
    assert d.decision == "denied" and d.actor == "timeout"
    assert httpx.get(f"{s.url}/v1/approvals", headers=H).json()["pending"] == []


def test_session_threshold_and_allow_for_session(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(call("shell", command="echo one"), say("One."), call("shell", command="echo two"),
              say("Two."), call("shell", command="echo three"), say("Three."))
    # shell is MEDIUM: below the default threshold (HIGH), so it runs without asking ...
    body = httpx.post(f"{s.url}/v1/sessions/s4/messages", headers=H, timeout=60,
                      json={"content": "1", "stream": False}).json()
    assert body["tool_steps"][0]["decision"] == "allowed"
    # ... until this session's threshold is lowered to MEDIUM
    assert httpx.put(f"{s.url}/v1/approvals/thresholds/s4", headers=H,
                     json={"risk": "medium"}).status_code == 200
    out: dict = {}  # type: ignore[type-arg]
    th = threading.Thread(target=lambda: out.update(httpx.post(
        f"{s.url}/v1/sessions/s4/messages", headers=H, timeout=60,
        json={"content": "2", "stream": False}).json()))
    th.start()
    p = _wait_pending(s.url)[0]
    httpx.post(f"{s.url}/v1/approvals/{p['id']}", headers=H,
               json={"approve": True, "scope": "session"})
    th.join(60)
    assert out["tool_steps"][0]["decision"] == "allowed"
    rules = httpx.get(f"{s.url}/v1/approvals", headers=H).json()["session_rules"]
    sid = s.app.memory.store.session_id("s4")  # type: ignore[attr-defined]
    assert rules == [{"session_id": sid, "session_name": "s4", "tool": "shell", "by": "api:admin"}]
    # the third call is approved by the session rule without asking
    body = httpx.post(f"{s.url}/v1/sessions/s4/messages", headers=H, timeout=60,
                      json={"content": "3", "stream": False}).json()
    assert body["tool_steps"][0]["decision"] == "allowed"
    last = s.app.audit.events(kind="approval.decision")[0]
    assert last.actor == "session-rule" and last.detail["scope"] == "session"

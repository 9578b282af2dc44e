"""A canary PII value never reaches a real remote (llama.cpp server behind a recording proxy),
while the user still sees it restored: in streamed text and in tool-call arguments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bastion.app import build_app
from bastion.config.model import Config
from bastion.llm.http import PROFILES, HttpModel
from bastion.llm.worker import WorkerModel
from bastion.messages import (
    ChatSettings,
    Message,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
)
from bastion.privacy.policy import PrivacyPolicy
from bastion.privacy.router import PrivacyRouter
from bastion.server.app import create_app

from ._proxy import RecordingProxy

pytestmark = pytest.mark.real_model

NAME = "Johanna Whitfield"
# The shipped model echoes this with llama.cpp's AVX-512 and AMX kernels alike ("Hello,
# <PERSON_1>!"); "Say: Hello <PERSON_1>!" it echoed only on the AVX-512 ones (a near-tie)
GREET = f"Repeat exactly: Hello {NAME}!"
EMAIL = "johanna.whitfield@example.org"
CARD = "4111 1111 1111 1111"
SEND = ToolSpec("send_email", "Send an email", {
    "type": "object", "properties": {"to": {"type": "string"}, "subject": {"type": "string"}},
    "required": ["to", "subject"]})


@pytest.fixture(scope="module")
def local() -> Iterator[WorkerModel]:
    model = WorkerModel.load(n_ctx=1024, n_threads=1)
    yield model
    model.close()


async def ask(model: PrivacyRouter, text: str, tools: list[ToolSpec] | None = None,
              settings: ChatSettings | None = None) -> tuple[str, list[ToolCall]]:
    events = [ev async for ev in model.chat([Message("user", text)], tools or [],
                                              settings=settings or ChatSettings(max_tokens=24))]
    return ("".join(e.text for e in events if isinstance(e, TextDelta)),
            [e.call for e in events if isinstance(e, ToolCallEvent)])


def remote_text(proxy: RecordingProxy) -> str:
    """What the remote generated (SSE deltas and JSON completions)."""
    out = []
    for ex in proxy.exchanges:
        if "chat/completions" not in ex.path:
            continue
        for line in ex.response.splitlines():
            if line.startswith("data:") and "[DONE]" not in line:
                for ch in json.loads(line[5:]).get("choices") or []:
                    out.append((ch.get("delta") or {}).get("content") or "")
        if ex.response.startswith("{"):
            for ch in json.loads(ex.response).get("choices") or []:
                out.append((ch.get("message") or {}).get("content") or "")
    return "".join(out)


def remote_model(proxy: RecordingProxy) -> HttpModel:
    return HttpModel("smollm2-135m", quirks=PROFILES["llamacpp"], base_url=proxy.url)


async def test_redacted_for_remote_restored_for_user(
    real_policy: PrivacyPolicy, proxy: RecordingProxy, local: WorkerModel
) -> None:
    remote = remote_model(proxy)
    # values are restored only into tools that cannot send data out (F11: an egress-capable
    # tool keeps the placeholders, tests/security/test_f11_privacy_egress.py); here the tool
    # is declared local, as a local mail-drafting tool would be
    router = PrivacyRouter(local, remote, real_policy, egress=lambda name: False)
    try:
        text, _ = await ask(router, GREET)
        answer = remote_text(proxy)
        assert "PERSON_1" in answer  # the remote used the placeholder ...
        assert NAME in text and "PERSON_1" not in text  # ... the user sees the name
        _, calls = await ask(router, f"Send an email to {NAME} at {EMAIL} about the meeting.",
                             [SEND], ChatSettings(tool_choice="send_email", max_tokens=64))
        (call,) = calls
        assert "PERSON_1" in remote_text(proxy)
        assert NAME in json.dumps(call.arguments) and "PERSON_" not in json.dumps(call.arguments)
        sent = proxy.sent()
        assert NAME not in sent and EMAIL not in sent and "Whitfield" not in sent
        assert "<PERSON_1>" in sent and "<EMAIL_ADDRESS_1>" in sent
    finally:
        await remote.aclose()


async def test_local_only_class_never_leaves(
    real_policy: PrivacyPolicy, proxy: RecordingProxy, local: WorkerModel
) -> None:
    remote = remote_model(proxy)
    router = PrivacyRouter(local, remote, real_policy)
    try:
        text, _ = await ask(router, f"My card is {CARD}. Which bank issued it?",
                            settings=ChatSettings(max_tokens=8))
        assert text.strip()  # the local model answered
        assert proxy.exchanges == []
        assert router.history[-1].route == "local"
    finally:
        await remote.aclose()


def test_app_wires_router_cli_and_api(proxy: RecordingProxy) -> None:
    """build_app wraps the agent's model; the audit log has classes, never values."""
    token = "tok-privacy-5b1f0e"
    config = Config.model_validate({
        "api": {"token": token},
        "model": {"n_ctx": 1024, "n_threads": 1},
        "memory": {"enabled": False},
        "privacy": {"enabled": True, "remote": {
            "backend": "openai", "profile": "llamacpp", "base_url": proxy.url,
            "name": "smollm2-135m"}},
    })
    app = build_app(config)
    try:
        agent = app.agent()
        guarded = agent.model
        assert isinstance(app.model, PrivacyRouter) and guarded.inner is app.model  # type: ignore[attr-defined]

        async def turn() -> str:
            out = []
            stream: AsyncIterator[object] = guarded.chat(
                [Message("user", GREET)], [],
                settings=ChatSettings(max_tokens=24))
            async for ev in stream:
                if isinstance(ev, TextDelta):
                    out.append(ev.text)
            return "".join(out)

        import asyncio

        text = asyncio.run(turn())
        assert NAME in text and NAME not in proxy.sent()
        rows = app.audit.events(kind="privacy.route")
        assert rows and rows[0].decision == "remote_redacted"
        dumped = json.dumps([r.to_dict() for r in rows])
        assert "PERSON" in dumped and "Whitfield" not in dumped

        client = TestClient(create_app(app, close_app=False))
        with client:
            assert client.post("/v1/privacy/scan", json={"text": NAME}).status_code == 401
            res = client.post("/v1/privacy/scan", json={"text": f"{NAME}, card {CARD}"},
                              headers={"Authorization": f"Bearer {token}"})
        assert res.status_code == 200
        body = res.json()
        assert body["decision"]["route"] == "local"
        assert {e["type"] for e in body["entities"]} >= {"PERSON", "CREDIT_CARD"}
        assert NAME not in res.text and CARD not in res.text  # offsets, never the values
    finally:
        asyncio.run(app.aclose())

    from bastion.cli.main import _load_commands
    from bastion.cli.main import app as cli

    _load_commands()
    res = CliRunner().invoke(cli, ["privacy", "scan", "--json", f"Hi, I am {NAME}, {EMAIL}"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["decision"]["decision"] == "remote_redacted"
    assert report["redacted"] == "Hi, I am <PERSON_1>, <EMAIL_ADDRESS_1>"

"""The OpenAI-compatible HTTP backend against scripted transports (wire format, errors)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bastion.agent.events import ToolStarted, TurnError
from bastion.app import build_app
from bastion.config.model import Config
from bastion.errors import (
    ModelError,
    ModelHTTPError,
    ModelOutputError,
    ModelTimeout,
    ModelUnreachable,
)
from bastion.llm.http import PROFILES, HttpModel, normalize_base_url, pick_profile
from bastion.memory.base import EphemeralMemory
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    TextDelta,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from bastion.tools.base import ToolContext, tool
from bastion.tools.registry import ToolRegistry

FILES = ToolSpec(
    "list_files",
    "List the files in a folder.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)


def sse(*chunks: dict[str, Any]) -> bytes:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return body.encode()


def delta(**d: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": d, "finish_reason": None}]}


def model_with(
    handler: Callable[[httpx.Request], httpx.Response], profile: str = "openai", **kw: Any
) -> tuple[HttpModel, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def wrapped(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content or b"{}"))
        return handler(request)

    m = HttpModel(
        "m1",
        quirks=PROFILES[profile],
        base_url="http://127.0.0.1:9",
        api_key="k",
        transport=httpx.MockTransport(wrapped),
        **kw,
    )
    return m, seen


async def collect(m: HttpModel, tools: list[ToolSpec] | None = None, **settings: Any) -> list[Any]:
    msgs = [Message("system", "s"), Message("user", "list docs")]
    return [e async for e in m.chat(msgs, tools or [], settings=ChatSettings(**settings))]


async def test_streams_text_and_usage() -> None:
    body = sse(
        delta(content="Hel"),
        delta(content="lo"),
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
    )
    m, seen = model_with(lambda r: httpx.Response(200, content=body))
    evs = await collect(m)
    assert [e.text for e in evs if isinstance(e, TextDelta)] == ["Hel", "lo"]
    assert Usage(7, 2) in evs and evs[-1] == Finish("stop")
    assert seen[0]["stream"] is True and seen[0]["stream_options"] == {"include_usage": True}
    assert seen[0]["messages"][1] == {"role": "user", "content": "list docs"}
    await m.aclose()


async def test_native_tool_call_deltas_are_assembled_and_repaired() -> None:
    tc0 = {"index": 0, "id": "call_1", "function": {"name": "list_files", "arguments": "{'path': "}}
    tc1 = {"index": 0, "function": {"arguments": "'docs',}"}}
    body = sse(
        delta(tool_calls=[tc0]),
        delta(tool_calls=[tc1]),
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
    )
    m, seen = model_with(lambda r: httpx.Response(200, content=body))
    evs = await collect(m, [FILES])
    calls = [e.call for e in evs if isinstance(e, ToolCallEvent)]
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_1", "list_files", {"path": "docs"})
    ]
    assert seen[0]["tools"][0]["function"]["name"] == "list_files"
    assert seen[0]["tool_choice"] == "auto"


async def test_unrepairable_tool_json_retries_then_raises() -> None:
    tc = {"index": 0, "id": "c", "function": {"name": "list_files", "arguments": "path is docs"}}
    body = sse(delta(tool_calls=[tc]))
    m, seen = model_with(lambda r: httpx.Response(200, content=body))
    with pytest.raises(ModelOutputError, match="could not be parsed") as info:
        await collect(m, [FILES])
    assert len(seen) == 2  # one retry
    assert "native_tools" in (info.value.fix or "")


async def test_a_stream_without_a_reply_is_an_error_not_an_empty_answer() -> None:
    # llama_cpp.server with chatml-function-calling and tools streams only a ping comment
    m, seen = model_with(lambda r: httpx.Response(200, content=b": ping - 2026\n\n"),
                         profile="llamacpp", native_tools=True)
    with pytest.raises(ModelOutputError, match="without a reply") as info:
        await collect(m, [FILES])
    assert len(seen) == 2  # one retry
    assert "native_tools: false" in (info.value.fix or "")


async def test_unknown_tool_name_is_an_output_error() -> None:
    tc = {"index": 0, "id": "c", "function": {"name": "rm", "arguments": "{}"}}
    m, _ = model_with(lambda r: httpx.Response(200, content=sse(delta(tool_calls=[tc]))))
    with pytest.raises(ModelOutputError, match="unknown tool 'rm'"):
        await collect(m, [FILES])


async def test_constrained_path_uses_response_format() -> None:
    replies = [
        {
            "choices": [{"message": {"content": '{"tool": "list_files"}'}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        },
        {"choices": [{"message": {"content": '{"path": "docs"}'}}]},
    ]

    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=replies.pop(0))

    m, seen = model_with(handler, profile="llamacpp")
    evs = await collect(m, [FILES])
    assert [(e.call.name, e.call.arguments) for e in evs if isinstance(e, ToolCallEvent)] == [
        ("list_files", {"path": "docs"})
    ]
    assert "tools" not in seen[0]
    assert seen[0]["response_format"]["type"] == "json_object"
    assert seen[0]["response_format"]["schema"]["properties"]["tool"]["enum"] == [
        "list_files",
        "none",
    ]
    assert seen[1]["response_format"]["schema"]["required"] == ["path"]


async def test_json_schema_spelling_for_vllm() -> None:
    m, seen = model_with(
        lambda r: httpx.Response(
            200, json={"choices": [{"message": {"content": '{"path": "x"}'}}]}
        ),
        profile="vllm",
    )
    evs = await collect(m, [FILES], tool_choice="list_files")
    assert any(isinstance(e, ToolCallEvent) for e in evs)
    assert seen[0]["response_format"]["type"] == "json_schema"
    assert seen[0]["response_format"]["json_schema"]["schema"]["required"] == ["path"]


async def test_connect_error_names_url_and_fix() -> None:
    def refuse(r: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=r)

    m, _ = model_with(refuse)
    with pytest.raises(ModelUnreachable) as info:
        await collect(m)
    assert isinstance(info.value.__cause__, httpx.ConnectError)  # the cause is kept
    assert "http://127.0.0.1:9/v1/chat/completions" in info.value.message
    assert "base_url" in (info.value.fix or "")


@pytest.mark.parametrize(
    ("status", "body", "fix_part"),
    [
        (401, {"error": {"message": "bad key"}}, "api_key"),
        (404, {"error": {"message": "model 'm1' not found"}}, "model.name"),
        (400, {"error": {"message": "bad request"}}, "model.base_url"),
    ],
)
async def test_http_status_errors_are_mapped(
    status: int, body: dict[str, Any], fix_part: str
) -> None:
    m, _ = model_with(lambda r: httpx.Response(status, json=body))
    with pytest.raises(ModelHTTPError) as info:
        await collect(m)
    assert info.value.status_code == status and json.loads(info.value.body) == body
    assert str(status) in info.value.message and body["error"]["message"] in info.value.message
    assert fix_part in (info.value.fix or "")


async def test_timeout_is_mapped() -> None:
    def slow(r: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=r)

    m, _ = model_with(slow)
    with pytest.raises(ModelTimeout, match="did not answer in time") as info:
        await collect(m)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_profiles_and_urls() -> None:
    assert pick_profile("ollama", None).name == "ollama"
    assert pick_profile("openai", None).name == "openai"
    assert pick_profile("openai", "http://127.0.0.1:8011").name == "llamacpp"
    assert pick_profile("openai", "http://localhost:1234/v1").name == "lmstudio"
    assert pick_profile("openai", "http://127.0.0.1:8011", "vllm").name == "vllm"
    with pytest.raises(ModelError, match="unknown server profile"):
        pick_profile("openai", None, "nope")
    assert normalize_base_url("http://h:1/") == "http://h:1/v1"
    assert normalize_base_url("http://h:1/v1/") == "http://h:1/v1"


@tool()
async def list_files(ctx: ToolContext, path: str) -> str:
    """List files."""
    return "a.txt"


async def test_agent_turn_with_broken_tool_json_ends_in_a_clear_error(tmp_path: Any) -> None:
    tc = {"index": 0, "id": "c", "function": {"name": "list_files", "arguments": "<<path=docs>>"}}
    m, seen = model_with(lambda r: httpx.Response(200, content=sse(delta(tool_calls=[tc]))))
    config = Config.model_validate(
        {"agent": {"workspace": str(tmp_path)}, "security": {"sandbox": "none"}}
    )
    memory = EphemeralMemory()
    app = build_app(config, model=m, registry=ToolRegistry([list_files]), memory=memory)
    events = [e async for e in app.agent().run("list docs", session_id="s1")]
    assert not any(isinstance(e, ToolStarted) for e in events)
    assert isinstance(events[-1], TurnError)
    assert "tool call could not be parsed" in events[-1].message and "\n" not in events[-1].message
    assert [msg.role for msg in await memory.history("s1")] == ["user"]  # nothing half-written
    await app.aclose()


WEATHER = ToolSpec(
    "get_weather",
    "Get the weather for a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name, e.g. Oslo"},
            "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
        },
        "required": ["city"],
    },
)


@pytest.mark.parametrize(
    ("profile", "native"),
    [("openai", None), ("ollama", None), ("llamacpp", True), ("vllm", True), ("lmstudio", True)],
)
async def test_native_backends_get_the_tools_unchanged(profile: str, native: bool | None) -> None:
    """Where a server does its own tool calling, bastion's constrained path stays out of it:
    the request carries the caller's tools verbatim, with no schema constraint and no
    choose/fill round trips (one request per model step)."""
    body = sse(delta(content="ok"), {"choices": [{"delta": {}, "finish_reason": "stop"}]})
    m, seen = model_with(
        lambda r: httpx.Response(200, content=body), profile=profile, native_tools=native
    )
    tools = [FILES, WEATHER]
    evs = await collect(m, tools)
    assert "".join(e.text for e in evs if isinstance(e, TextDelta)) == "ok"
    assert len(seen) == 1
    assert seen[0]["tools"] == [t.to_openai() for t in tools]  # descriptions, enums, defaults
    assert seen[0]["tools"][1]["function"]["parameters"] == WEATHER.parameters
    assert seen[0]["tool_choice"] == "auto" and "response_format" not in seen[0]


async def test_constrained_path_is_a_per_backend_switch() -> None:
    """``native_tools=False`` (config ``model.native_tools: false``) turns constrained
    decoding on for a server that has native tools; the default for openai stays native."""
    reply = {"choices": [{"message": {"content": '{"path": "docs"}'}}]}
    text = sse(delta(content="hi"), {"choices": [{"delta": {}, "finish_reason": "stop"}]})

    def handler(r: httpx.Request) -> httpx.Response:
        body = json.loads(r.content)
        return (
            httpx.Response(200, json=reply)
            if not body.get("stream")
            else httpx.Response(200, content=text)
        )

    m, seen = model_with(handler, profile="openai", native_tools=False)
    evs = await collect(m, [FILES], tool_choice="required")
    assert [e.call.arguments for e in evs if isinstance(e, ToolCallEvent)] == [{"path": "docs"}]
    assert all("tools" not in s for s in seen) and "response_format" in seen[0]
    native, seen2 = model_with(handler, profile="openai")
    await collect(native, [FILES])
    assert "tools" in seen2[0] and "response_format" not in seen2[0]

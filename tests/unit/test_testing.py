"""The shipped test doubles work against the real seams (issue 15 item 8)."""

from __future__ import annotations

import pytest

from bastion.errors import ModelHTTPError
from bastion.llm.http import PROFILES, HttpModel
from bastion.messages import ChatSettings, Message, TextDelta, ToolCallEvent, ToolSpec
from bastion.testing import FakeOpenAIServer, ScriptedModel, call, say, serve


async def test_fake_openai_server_serves_the_real_http_backend() -> None:
    fake = FakeOpenAIServer(tokens=3)
    server = await serve(fake, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    model = HttpModel("fake-model", quirks=PROFILES["llamacpp"],
                      base_url=f"http://127.0.0.1:{port}/v1")
    try:
        events = [e async for e in model.chat([Message("user", "hi")], [],
                                              settings=ChatSettings())]
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "alpha bravo charlie"
        fake.mode = "error500"
        with pytest.raises(ModelHTTPError) as info:
            async for _ in model.chat([Message("user", "hi")], [], settings=ChatSettings()):
                pass
        assert info.value.status_code == 500 and fake.chat_requests == 2
    finally:
        await model.aclose()
        server.close()
        await server.wait_closed()


async def test_scripted_model_plays_back_and_records() -> None:
    model = ScriptedModel(call("read_file", path="a.txt"), say("done now"))
    first = [e async for e in model.chat([Message("user", "read a.txt")])]
    assert [e.call.name for e in first if isinstance(e, ToolCallEvent)] == ["read_file"]
    second = [e async for e in model.chat([Message("user", "and?")])]
    assert "".join(e.text for e in second if isinstance(e, TextDelta)) == "done now"
    assert [s.messages[-1].content for s in model.seen] == ["read a.txt", "and?"]
    with pytest.raises(AssertionError, match="ran out of replies"):
        async for _ in model.chat([Message("user", "more")]):
            pass


async def test_fake_openai_server_scripts_native_tool_calls() -> None:
    fake = FakeOpenAIServer(script=[
        {"when": "list", "tool": "list_files", "arguments": {"path": "."},
         "then": "found: {result}"},
        {"when": "hello", "text": "hi there"}])
    server = await serve(fake, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    model = HttpModel("fake-model", quirks=PROFILES["llamacpp"], native_tools=True,
                      base_url=f"http://127.0.0.1:{port}/v1")
    tools = [ToolSpec("list_files", "List files.",
                      {"type": "object", "properties": {"path": {"type": "string"}}})]

    async def run(*messages: Message) -> list[object]:
        return [e async for e in model.chat(list(messages), tools, settings=ChatSettings())]

    try:
        first = await run(Message("user", "please list them"))
        calls = [e.call for e in first if isinstance(e, ToolCallEvent)]
        assert [(c.name, c.arguments) for c in calls] == [("list_files", {"path": "."})]
        second = await run(Message("user", "please list them"),
                           Message("assistant", "", tool_calls=calls),
                           Message("tool", "a.txt", tool_call_id=calls[0].id))
        assert "".join(e.text for e in second if isinstance(e, TextDelta)) == "found: a.txt"
        third = await run(Message("user", "hello"))
        assert "".join(e.text for e in third if isinstance(e, TextDelta)) == "hi there"
    finally:
        await model.aclose()
        server.close()
        await server.wait_closed()

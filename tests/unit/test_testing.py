"""The shipped test doubles work against the real seams (issue 15 item 8)."""

from __future__ import annotations

import pytest

from bastion.errors import ModelHTTPError
from bastion.llm.http import PROFILES, HttpModel
from bastion.messages import ChatSettings, Message, TextDelta, ToolCallEvent
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

"""The OpenAI-compatible backend against a real ``python -m llama_cpp.server`` process."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.agent.events import ToolFinished, ToolStarted, TurnDone, TurnError
from bastion.app import build_app
from bastion.errors import ModelError
from bastion.llm.http import HttpModel
from bastion.memory.base import EphemeralMemory
from bastion.messages import ChatSettings, Finish, Message, TextDelta, ToolCallEvent
from bastion.models import create_model
from bastion.tools.builtin.files import list_files
from bastion.tools.registry import ToolRegistry
from tests.integration.llm.conftest import count_files, free_port, sample_config

pytestmark = pytest.mark.real_model


async def test_agent_task_through_llama_cpp_server(bastion_home: Path, llama_server: str) -> None:
    config = sample_config(
        bastion_home, backend="openai", base_url=llama_server, name="smollm2", timeout_s=600
    )
    model = create_model(config)
    assert isinstance(model, HttpModel) and model.quirks.name == "llamacpp"
    app = build_app(
        config,
        model=model,
        registry=ToolRegistry([count_files, list_files]),
        memory=EphemeralMemory(),
    )
    events = [ev async for ev in app.agent().run("How many files are in the reports folder?")]
    started = [e.call for e in events if isinstance(e, ToolStarted)]
    assert started and started[0].name == "count_files", events
    assert started[0].arguments == {"folder": "reports"}
    finished = [e.result for e in events if isinstance(e, ToolFinished)]
    assert finished[0].ok and "3 files" in finished[0].for_model()
    assert isinstance(events[-1], TurnDone) and events[-1].answer.strip()
    await app.aclose()


async def test_a_greeting_calls_no_tool_over_http(bastion_home: Path, llama_server: str) -> None:
    """#16 item 4: with bastion's own tools, "hi" through llama_cpp.server ran
    python(code="The program; use print() ...") -- the server gives no scores, and the pick the
    model generates under the choice schema named python (bench/tool_modes.py, http-before)."""
    config = sample_config(
        bastion_home, backend="openai", base_url=llama_server, name="smollm2", timeout_s=600
    )
    model = create_model(config)
    app = build_app(config, model=model, memory=EphemeralMemory())  # every built-in tool
    agent = app.agent()
    events = [e async for e in model.chat(
        [Message("system", agent.options.system_prompt), Message("user", "hi")],
        agent.tool_specs(), settings=ChatSettings(max_tokens=16))]
    assert not [e for e in events if isinstance(e, ToolCallEvent)], events
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip()
    await app.aclose()


async def test_plain_streaming_through_the_server(llama_server: str) -> None:
    model = HttpModel("smollm2", quirks=create_profile(), base_url=llama_server)
    events = [
        e
        async for e in model.chat(
            [Message("user", "Say hello.")], settings=ChatSettings(max_tokens=12)
        )
    ]
    assert sum(isinstance(e, TextDelta) for e in events) >= 2  # really streamed, piece by piece
    assert isinstance(events[-1], Finish)
    await model.aclose()


async def test_unreachable_server_is_a_clear_turn_error(bastion_home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = sample_config(bastion_home, backend="openai", base_url=url)
    app = build_app(config, registry=ToolRegistry([count_files]), memory=EphemeralMemory())
    events = [ev async for ev in app.agent().run("How many files are in reports?")]
    assert isinstance(events[-1], TurnError)
    assert f"cannot reach the model server at {url}/v1/chat/completions" in events[-1].message
    with pytest.raises(ModelError):
        [e async for e in app.model.chat([Message("user", "hi")])]
    await app.aclose()


def create_profile():  # type: ignore[no-untyped-def]
    from bastion.llm.http import PROFILES

    return PROFILES["llamacpp"]

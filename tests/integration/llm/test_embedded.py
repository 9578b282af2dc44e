"""The shipped model through the embedded backend (real llama.cpp, no fakes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.agent.events import ToolFinished, ToolStarted, TurnDone
from bastion.app import build_app
from bastion.errors import ModelError
from bastion.llm.embedded import EmbeddedModel
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
from bastion.tools.builtin.files import list_files
from bastion.tools.registry import ToolRegistry
from tests.integration.llm.conftest import count_files, sample_config

pytestmark = pytest.mark.real_model


async def run_task(app: Any, question: str) -> list[Any]:
    agent = app.agent()
    return [ev async for ev in agent.run(question)]


async def test_agent_completes_a_task_that_needs_a_tool(
    bastion_home: Path, embedded: EmbeddedModel
) -> None:
    config = sample_config(bastion_home)
    registry = ToolRegistry([count_files, list_files])
    app = build_app(config, model=embedded, registry=registry, memory=EphemeralMemory())
    events = await run_task(app, "How many files are in the reports folder?")
    started = [e.call for e in events if isinstance(e, ToolStarted)]
    finished = [e.result for e in events if isinstance(e, ToolFinished)]
    assert started and started[0].name == "count_files", started
    assert started[0].arguments == {"folder": "reports"}
    assert finished[0].ok and "3 files" in finished[0].for_model()
    done = events[-1]
    assert isinstance(done, TurnDone) and done.answer.strip() and done.steps >= 2
    assert any(isinstance(e, TextDelta) for e in events)  # the answer was streamed


async def test_unrelated_question_is_answered_without_tools(embedded: EmbeddedModel) -> None:
    tools = [count_files.spec(), list_files.spec()]
    msgs = [
        Message("system", "You are helpful."),
        Message("user", "Write one sentence about the sea."),
    ]
    events = [e async for e in embedded.chat(msgs, tools, settings=ChatSettings(max_tokens=40))]
    assert not any(isinstance(e, ToolCallEvent) for e in events)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip()
    assert isinstance(events[-1], Finish)


async def test_forced_tool_arguments_follow_enum_and_types(embedded: EmbeddedModel) -> None:
    spec = ToolSpec(
        "set_alarm",
        "Set an alarm.",
        {
            "type": "object",
            "properties": {
                "hour": {"type": "integer"},
                "day": {"type": "string", "enum": ["mon", "tue"]},
            },
            "required": ["hour", "day"],
        },
    )
    msgs = [Message("user", "Wake me at 7 on tuesday")]
    events = [
        e async for e in embedded.chat(msgs, [spec], settings=ChatSettings(tool_choice="set_alarm"))
    ]
    call = next(e.call for e in events if isinstance(e, ToolCallEvent))
    assert isinstance(call.arguments["hour"], int) and call.arguments["day"] in ("mon", "tue")


async def test_streaming_usage_tokens_and_cancellation(embedded: EmbeddedModel) -> None:
    msgs = [Message("user", "Count from one to twenty in words.")]
    assert embedded.n_ctx == 4096
    n = embedded.count_tokens(msgs)
    assert 5 < n < embedded.count_tokens([*msgs, Message("assistant", "one two three")])
    stream = embedded.chat(msgs, settings=ChatSettings(max_tokens=64))
    first = await stream.__anext__()
    assert isinstance(first, TextDelta)
    await stream.aclose()  # cancels generation and frees the lock
    events = [e async for e in embedded.chat(msgs, settings=ChatSettings(max_tokens=8))]
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8
    assert events[-1] == Finish("length")


async def test_prompt_longer_than_context_is_a_clear_error(embedded: EmbeddedModel) -> None:
    msgs = [Message("user", "word " * 5000)]
    with pytest.raises(ModelError, match="more than the context") as info:
        [e async for e in embedded.chat(msgs)]
    assert "n_ctx" in (info.value.fix or "")

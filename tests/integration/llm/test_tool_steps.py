"""Multi-step tool use on the shipped model (real llama.cpp): optional path arguments,
chaining a second tool after a result, and a prose answer after a call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.agent.events import ToolFinished, ToolStarted, TurnDone
from bastion.app import build_app
from bastion.llm.embedded import EmbeddedModel
from bastion.memory.base import EphemeralMemory
from bastion.tools.builtin.files import list_files, read_file
from bastion.tools.registry import ToolRegistry
from tests.integration.llm.conftest import count_files, sample_config

pytestmark = pytest.mark.real_model


async def turn(home: Path, model: EmbeddedModel, tools: list[Any], question: str) -> list[Any]:
    config = sample_config(home)
    ws = Path(config.agent.workspace)
    (ws / "notes").mkdir()
    (ws / "notes" / "todo.md").write_text("buy milk\n")
    (ws / "notes.txt").write_text("The meeting is on Friday at 10.\n")
    app = build_app(config, model=model, registry=ToolRegistry(tools), memory=EphemeralMemory())
    return [ev async for ev in app.agent().run(question)]


async def test_two_step_task_chains_a_second_tool(
    bastion_home: Path, embedded: EmbeddedModel
) -> None:
    events = await turn(
        bastion_home,
        embedded,
        [count_files, read_file],
        "Count the files in the reports folder, then read notes.txt.",
    )
    calls = [(e.call.name, e.call.arguments) for e in events if isinstance(e, ToolStarted)]
    assert calls == [("count_files", {"folder": "reports"}), ("read_file", {"path": "notes.txt"})]
    results = [e.result for e in events if isinstance(e, ToolFinished)]
    assert all(r.ok for r in results) and "Friday" in results[1].for_model()
    done = events[-1]
    assert isinstance(done, TurnDone) and done.steps == 3 and done.answer.strip()


async def test_optional_folder_is_filled_and_the_answer_is_prose(
    bastion_home: Path, embedded: EmbeddedModel
) -> None:
    events = await turn(bastion_home, embedded, [list_files], "List the files in the notes folder.")
    calls = [e.call for e in events if isinstance(e, ToolStarted)]
    assert [(c.name, c.arguments) for c in calls] == [("list_files", {"path": "notes"})]
    done = events[-1]
    assert isinstance(done, TurnDone) and done.steps == 2
    answer = done.answer.strip()
    # the answer is words, not the tool call echoed back as JSON
    assert answer and not answer.startswith("{"), answer
    assert '"arguments"' not in answer and '"name"' not in answer, answer


async def test_answer_after_a_result_uses_it_instead_of_echoing_the_call(
    bastion_home: Path, embedded: EmbeddedModel
) -> None:
    events = await turn(
        bastion_home, embedded, [count_files], "How many files are in the reports folder?"
    )
    done = events[-1]
    assert isinstance(done, TurnDone) and done.steps == 2
    answer = done.answer.strip()
    assert not answer.startswith("{") and '"arguments"' not in answer, answer
    assert "q1" in answer or "3" in answer, answer


async def test_the_demo_question_is_answered_from_the_tool_result(
    bastion_home: Path, embedded: EmbeddedModel
) -> None:
    """`make demo`'s task on examples/sample: the answer explained Python's os.listdir
    instead of naming the five files list_files returned (a result shown as a user message
    after the question read to the shipped model as a new request)."""
    import shutil

    config = sample_config(bastion_home)
    ws = Path(config.agent.workspace)
    shutil.rmtree(ws)
    shutil.copytree(Path(__file__).resolve().parents[3] / "examples" / "sample", ws)
    app = build_app(config, model=embedded, registry=ToolRegistry([list_files]),
                    memory=EphemeralMemory())
    events = [ev async for ev in app.agent().run(
        "How many files are in my workspace? List them.")]
    assert [e.call.name for e in events if isinstance(e, ToolStarted)] == ["list_files"]
    done = events[-1]
    assert isinstance(done, TurnDone)
    names = sorted(p.name for p in ws.iterdir())
    assert len(names) == 5 and all(n in done.answer for n in names), done.answer

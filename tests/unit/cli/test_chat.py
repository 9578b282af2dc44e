"""The chat REPL's logic with a scripted model: turns, sessions, slash commands, exit."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from bastion.app import build_app
from bastion.cli._chat import ChatSession
from bastion.config.model import Config
from bastion.testing import ScriptedModel, call, say


def scripted_input(lines: list[str]) -> Callable[[str], str]:
    pending = list(lines)

    def read(prompt: str) -> str:
        if not pending:
            raise EOFError
        item = pending.pop(0)
        if item == "^C":
            raise KeyboardInterrupt
        return item

    return read


def make_chat(model: ScriptedModel, lines: list[str], session: str | None = None):  # type: ignore[no-untyped-def]
    config = Config.model_validate({"memory": {"enabled": False}})
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False, color_system=None)
    chat = ChatSession(build_app(config, model=model), session, out=out, console=console,
                       read=scripted_input(lines))
    return chat, out


def test_turns_share_the_session_and_eof_exits_zero(tmp_path: Path) -> None:
    model = ScriptedModel(say("Hi, I am bastion."), say("You said hello before."))
    chat, out = make_chat(model, ["hello", "what did I say?"], session="s1")
    assert chat.run() == 0
    text = out.getvalue()
    assert "Hi, I am bastion." in text and "You said hello before." in text
    second = [m.content for m in model.seen[1].messages]
    assert "hello" in second and "Hi, I am bastion." in second  # multi-turn within the session
    assert model.closed


def test_tool_steps_are_rendered(tmp_path: Path) -> None:
    model = ScriptedModel(call("list_files", path="."), say("Empty folder."))
    chat, out = make_chat(model, ["what is here?"])
    chat.run()
    text = out.getvalue()
    assert '→ list_files(path=".")' in text and "✓ list_files" in text
    assert "Empty folder." in text


def test_slash_commands(tmp_path: Path) -> None:
    model = ScriptedModel(say("one"), say("two"))
    chat, out = make_chat(
        model,
        ["/help", "/tools", "/model", "/session", "first", "/clear", "second", "/session work",
         "/bogus", "/exit", "never sent"],
        session="start",
    )
    assert chat.run() == 0
    text = out.getvalue()
    assert "/clear" in text and "/exit" in text  # help
    assert "list_files" in text and "shell" in text and "medium" in text  # tools table
    assert "backend embedded" in text  # model
    assert "session start" in text and "session work" in text
    assert "unknown command /bogus" in text
    assert len(model.seen) == 2  # nothing after /exit reached the model
    assert [m.content for m in model.seen[1].messages if m.role == "user"] == ["second"]  # /clear


def test_ctrl_c_at_empty_prompt_exits_cleanly(tmp_path: Path) -> None:
    model = ScriptedModel()
    chat, _ = make_chat(model, ["^C", "not reached"])
    assert chat.run() == 0
    assert model.seen == [] and model.closed


def test_turn_error_is_one_line_and_the_repl_goes_on(tmp_path: Path) -> None:
    from bastion.testing import Reply

    model = ScriptedModel(Reply(fail=True), Reply(fail=True), say("recovered"))
    chat, out = make_chat(model, ["break", "again"])
    assert chat.run() == 0
    text = out.getvalue()
    assert "error: model produced invalid tool JSON" in text and "recovered" in text

"""``bastion chat`` driven through a pseudo-terminal: turns, tools, slash commands, Ctrl-C, EOF."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pexpect
import pytest
import yaml

from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.cli.conftest import ROOT, cli_env

PROMPT = "you> "


def spawn(home: Path, *args: str, sigint_ignored: bool = False) -> pexpect.spawn:
    def ignore_sigint() -> None:  # as a background job of a script starts it
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    child = pexpect.spawn(sys.executable, ["-m", "bastion", "chat", *args], env=cli_env(home),
                          cwd=str(ROOT), encoding="utf-8", timeout=60, dimensions=(40, 200),
                          preexec_fn=ignore_sigint if sigint_ignored else None)
    child.expect(PROMPT)
    return child


def test_chat_in_a_terminal(served_home: Path, fake_server: FakeOpenAIServer) -> None:
    child = spawn(served_home, "--session", "pty")
    try:
        child.sendline("hello there")
        child.expect("echo: hello there")
        child.expect(PROMPT)

        child.sendline("/tools")
        child.expect("list_files")
        child.expect(PROMPT)

        child.sendline("please count files")
        child.expect("→ list_files")
        child.expect("✓ list_files")
        child.expect("The tool said: sample")
        child.expect(PROMPT)

        # Ctrl-C while the model streams cancels the turn and gives the prompt back.
        child.sendline("be slow")
        child.expect("tick")
        child.sendintr()
        child.expect("cancelled")
        child.expect(PROMPT)

        child.sendline("still there?")
        child.expect("echo: still there?")
        child.expect(PROMPT)
        # the earlier turns of this session went to the model too (multi-turn)
        sent = [m.get("content") for m in fake_server.requests[-1]["messages"]]
        assert "hello there" in sent and "be slow" in sent

        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before


def test_risky_call_asks_at_the_terminal(served_home: Path) -> None:
    config = served_home / "bastion.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["security"]["tools"] = {"write_file": "ask"}
    config.write_text(yaml.safe_dump(raw))
    note = served_home / "workspace" / "note.txt"
    child = spawn(served_home)
    try:
        child.sendline("please write note")
        child.expect("approval needed")
        child.expect("will write to note.txt")
        child.expect(r"Allow this call\? \[y/N/s")
        child.sendline("n")
        child.expect("✗ write_file denied")
        child.expect(PROMPT)
        assert not note.exists()

        child.sendline("please write note")
        child.expect(r"Allow this call\? \[y/N/s")
        child.sendline("y")
        child.expect("✓ write_file")
        child.expect(PROMPT)
        assert note.read_text() == "hi"
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("sigint_ignored", [False, True])
def test_ctrl_c_at_empty_prompt_exits_cleanly(served_home: Path, sigint_ignored: bool) -> None:
    # Ctrl-C works even when chat was started with SIGINT ignored (a script's background job)
    child = spawn(served_home, sigint_ignored=sigint_ignored)
    child.send("half a question")
    child.expect("half a question")  # echoed: readline has the text
    child.sendintr()  # with text typed: the line is dropped, like a shell
    child.expect(PROMPT)
    child.sendintr()  # at an empty prompt: leave
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in (child.before or "")

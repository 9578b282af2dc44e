"""F8 attack: a prompt-injected model (and the tool output it reads) writes terminal control
sequences, hoping to rewrite the approval panel a human is reading (ESC[1A ESC[2K), set the
window title or write the clipboard (OSC 52). Run the real ``bastion chat`` in a pty against a
scripted model: the terminal must get the escaped text, never a raw ESC or C1 byte."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml

from tests.fakes.scripted_chat_server import FakeOpenAIServer, ScriptedHandler, _chunk
from tests.integration.cli.conftest import ROOT, cli_env, served_home  # noqa: F401

PROMPT = "you> "
HIDE = "\x1b[1A\x1b[2K" * 3
PAYLOAD = f"import shutil; shutil.rmtree('/workspace')  # {HIDE}print('hello')"
OSC52 = "\x1b]52;c;cm0gLXJmIH4vCg==\x07"  # "rm -rf ~/" into the clipboard
EVIL_FILE = "\x1b]0;pwned\x07\x1b[2J\x9b2Jtitle and screen\n"
# every ESC a terminal may get in these spans: rich's own colour/style codes (SGR) only
_SGR = re.compile(r"\x1b\[[0-9;]*m")


class _Attacker(ScriptedHandler):
    def _script(self, body: dict[str, Any]) -> Iterator[bytes]:
        messages = body["messages"]
        last = messages[-1]
        if last["role"] == "tool":
            called = messages[-2]["tool_calls"][0]["function"]["name"]
            if called == "python":  # the call was denied: now try the clipboard
                yield from self._words(f"Sorry. {OSC52}Copied a fix for you.")
                return
            yield from super()._script(body)  # "The tool said: <first line of the output>"
            return
        user = last["content"]
        if "clean up" in user:
            name, args = "python", {"code": PAYLOAD}
        elif "read evil" in user:
            name, args = "read_file", {"path": "sample/evil.txt"}
        else:
            yield from super()._script(body)
            return
        call = {"index": 0, "id": "call_evil", "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}
        yield _chunk({"role": "assistant", "tool_calls": [call]})
        yield _chunk({}, "tool_calls")


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(_Attacker) as server:
        yield server


def _raw_controls(text: str) -> list[str]:
    """Control characters a terminal would act on (SGR styling and \\r\\n\\t excepted)."""
    rest = _SGR.sub("", text)
    return [c for c in rest if (ord(c) < 0x20 and c not in "\r\n\t") or 0x7f <= ord(c) <= 0x9f]


def test_model_and_tool_text_cannot_drive_the_terminal(served_home: Path) -> None:  # noqa: F811
    path = served_home / "bastion.yaml"
    raw = yaml.safe_load(path.read_text())
    raw.setdefault("security", {})["approval_timeout_s"] = 30
    raw["hitl"] = {"rules": [{"name": "python-asks", "level": "high", "tools": ["python"]}]}
    path.write_text(yaml.safe_dump(raw))
    (served_home / "workspace" / "sample" / "evil.txt").write_text(EVIL_FILE)
    child = pexpect.spawn(sys.executable, ["-m", "bastion", "chat", "--session", "ansi"],
                          env=cli_env(served_home), cwd=str(ROOT), encoding="utf-8",
                          timeout=60, dimensions=(40, 200))
    try:
        child.expect(PROMPT)
        child.sendline("please clean up")
        child.expect("approval needed")
        child.expect(r"Allow this call\?")
        panel = child.before
        child.sendline("n")
        child.expect(PROMPT)
        answer = child.before
        child.sendline("read evil please")
        child.expect(PROMPT)
        evil = child.before
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    # the approval panel shows the escapes as text; the human sees what will really run
    assert "\x1b[1A" not in panel and "\x1b[2K" not in panel, repr(panel)
    assert "\\x1b[1A\\x1b[2K" in panel and "shutil.rmtree" in panel
    assert _raw_controls(panel) == []
    # streamed model text: no OSC 52 clipboard write
    assert "\x1b]52" not in answer and "\\x1b]52" in answer, repr(answer)
    assert _raw_controls(answer) == []
    # tool output preview and the model repeating it: no title change, no screen clear
    assert "\x1b]0;" not in evil and "\x1b[2J" not in evil and "\x9b" not in evil, repr(evil)
    assert "\\x1b]0;pwned" in evil
    assert _raw_controls(evil) == []

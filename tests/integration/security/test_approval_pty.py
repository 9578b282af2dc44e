"""The terminal approval prompt through a pseudo-terminal, answered by the approval manager:
"allow for this session" becomes a rule, no answer is a deny, every decision is audited."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect
import yaml

from bastion.security.audit import AuditLog
from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.cli.conftest import ROOT, cli_env, fake_server, served_home  # noqa: F401

PROMPT = "you> "


def _configure(home: Path, timeout_s: float) -> None:
    path = home / "bastion.yaml"
    raw = yaml.safe_load(path.read_text())
    raw.setdefault("security", {})["approval_timeout_s"] = timeout_s
    raw["hitl"] = {"rules": [{"name": "listing-is-critical-here", "level": "high",
                              "tools": ["list_files"]}]}
    path.write_text(yaml.safe_dump(raw))


def _spawn(home: Path) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "bastion", "chat", "--session", "ptyhitl"],
                          env=cli_env(home), cwd=str(ROOT), encoding="utf-8", timeout=60,
                          dimensions=(40, 200))
    child.expect(PROMPT)
    return child


def _decisions(home: Path) -> list[tuple[str | None, str | None, object]]:
    log = AuditLog(home / "audit" / "audit.db")
    rows = [(e.actor, e.decision, (e.detail or {}).get("scope"))
            for e in reversed(log.events(kind="approval.decision"))]
    assert log.verify().ok
    log.close()
    return rows


def test_allow_for_session_in_a_terminal(
    served_home: Path, fake_server: FakeOpenAIServer  # noqa: F811
) -> None:
    _configure(served_home, 30)
    child = _spawn(served_home)
    try:
        child.sendline("please count files")
        child.expect("approval needed")
        child.expect("list_files")
        child.expect(r"Allow this call\?")
        child.sendline("s")
        child.expect("✓ list_files")
        child.expect(PROMPT)
        child.sendline("count files again please")  # same tool, same session: no prompt
        idx = child.expect(["approval needed", "✓ list_files"])
        assert idx == 1
        child.expect(PROMPT)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert _decisions(served_home) == [("user", "approved", "session"),
                                       ("session-rule", "approved", "session")]


def test_no_answer_is_deny(
    served_home: Path, fake_server: FakeOpenAIServer  # noqa: F811
) -> None:
    _configure(served_home, 1)
    child = _spawn(served_home)
    try:
        child.sendline("please count files")
        child.expect(r"Allow this call\?")
        child.expect("denied")
        child.expect(PROMPT)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert _decisions(served_home) == [("timeout", "denied", "once")]

"""The terminal approver: what it shows, and y / n / timeout / closed input."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator

import pytest
from rich.console import Console

from bastion.cli.approval import ConsoleApprover, choose_approver
from bastion.security.approval import AllowApprover, ApprovalRequest, DenyApprover
from bastion.tools.base import Risk


@pytest.fixture
def pipe() -> Iterator[tuple[io.TextIOWrapper, int]]:
    r, w = os.pipe()
    reader = os.fdopen(r, "r")
    yield reader, w
    reader.close()
    with contextlib.suppress(OSError):
        os.close(w)


def approver(reader: io.TextIOWrapper) -> tuple[ConsoleApprover, io.StringIO]:
    buf = io.StringIO()
    return ConsoleApprover(Console(file=buf, width=120, color_system=None), reader), buf


REQ = ApprovalRequest("shell", {"command": "rm -rf build && make", "timeout_s": 5}, Risk.HIGH,
                      ["policy requires approval"])


async def test_yes_approves_and_shows_the_exact_command(pipe) -> None:  # type: ignore[no-untyped-def]
    reader, w = pipe
    appr, buf = approver(reader)
    os.write(w, b"y\n")
    decision = await appr.decide(REQ, timeout_s=5)
    assert decision.approved and decision.by == "user"
    shown = buf.getvalue()
    assert "rm -rf build && make" in shown and "HIGH" in shown
    assert "policy requires approval" in shown
    assert "Allow this call? [y/N/s = allow shell for this session]" in shown
    assert '"timeout_s": 5' in shown


async def test_anything_else_denies(pipe) -> None:  # type: ignore[no-untyped-def]
    reader, w = pipe
    appr, _ = approver(reader)
    os.write(w, b"sure?\n")
    assert not (await appr.decide(REQ, timeout_s=5)).approved


async def test_timeout_denies(pipe) -> None:  # type: ignore[no-untyped-def]
    reader, _ = pipe
    appr, buf = approver(reader)
    decision = await appr.decide(REQ, timeout_s=0.05)
    assert not decision.approved and decision.by == "timeout"
    assert "denied" in buf.getvalue()


async def test_closed_input_denies(pipe) -> None:  # type: ignore[no-untyped-def]
    reader, w = pipe
    os.close(w)
    appr, _ = approver(reader)
    assert not (await appr.decide(REQ, timeout_s=5)).approved


async def test_python_code_and_file_content_are_shown_in_full(pipe) -> None:  # type: ignore[no-untyped-def]
    reader, w = pipe
    appr, buf = approver(reader)
    code = "import os\nprint(os.listdir('.'))"
    os.write(w, b"n\nn\n")
    await appr.decide(ApprovalRequest("python", {"code": code}, Risk.HIGH), timeout_s=5)
    await appr.decide(ApprovalRequest("write_file", {"path": "a.txt", "content": "line1\nline2"},
                                      Risk.HIGH), timeout_s=5)
    shown = buf.getvalue()
    assert "print(os.listdir('.'))" in shown and "will write to a.txt" in shown
    assert "line2" in shown


def test_choose_approver() -> None:
    assert isinstance(choose_approver(yes=True), AllowApprover)
    assert isinstance(choose_approver(yes=False, interactive=False), DenyApprover)
    assert isinstance(choose_approver(yes=False, interactive=True), ConsoleApprover)

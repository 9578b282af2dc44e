"""The terminal approver: shows exactly what a risky tool call will run and asks y/N.

Which approver a command gets: ``--yes`` -> :class:`AllowApprover`; an interactive
terminal -> :class:`ConsoleApprover`; anything else (pipes, CI) -> :class:`DenyApprover`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from bastion.cli._terminal import visible
from bastion.security.approval import (
    AllowApprover,
    ApprovalDecision,
    ApprovalRequest,
    Approver,
    DenyApprover,
)

# Which argument holds the thing that runs, and how to highlight it.
_PAYLOAD = {"shell": ("command", "bash"), "python": ("code", "python")}


def describe(request: ApprovalRequest) -> RenderableType:
    """Return the panel body: tool, risk, reasons, and the exact command/code/arguments.

    Everything model-made passes :func:`visible`: a control sequence in the command shows
    as escaped text instead of rewriting what the human reads.
    """
    head = Text.from_markup(
        f"[bold]{escape(visible(request.tool))}[/]  risk [bold red]{request.risk.name}[/]"
        + (f"\n[dim]{escape(visible('; '.join(request.reasons)))}[/]" if request.reasons
           else "")
    )
    parts: list[RenderableType] = [head]
    args = dict(request.arguments)
    payload = _PAYLOAD.get(request.tool)
    if payload and isinstance(args.get(payload[0]), str):
        parts += [Text("will run:", style="bold"),
                  Syntax(visible(args.pop(payload[0])), payload[1], word_wrap=True)]
    if request.tool == "write_file" and isinstance(args.get("content"), str):
        path = args.pop("path", "?")
        parts += [Text(f"will write to {visible(str(path))}:", style="bold"),
                  Syntax(visible(args.pop("content")), "text", word_wrap=True)]
    if args:
        parts += [Text("arguments:" if len(parts) == 1 else "other arguments:", style="bold"),
                  Syntax(visible(json.dumps(args, indent=2, ensure_ascii=False)), "json",
                         word_wrap=True)]
    return Group(*parts)


class ConsoleApprover:
    """Asks on the terminal. Reading is asynchronous, so a timeout or Ctrl-C ends the wait."""

    def __init__(self, console: Console | None = None, stdin: IO[str] | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.stdin = stdin or sys.stdin
        self._lock = asyncio.Lock()  # concurrent calls are asked one after another

    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        """Show the request and wait for y/N; no answer within ``timeout_s`` is a deny."""
        async with self._lock:
            self.console.print(
                Panel(describe(request), title="approval needed", border_style="yellow",
                      expand=False)
            )
            # "\\[" keeps rich from reading the choices as a markup tag (it would drop them)
            tool = escape(visible(request.tool))
            self.console.print(f"Allow this call? \\[y/N/s = allow {tool} for "
                               f"this session] (denied after {timeout_s:.0f} s) ", end="",
                               highlight=False)
            try:
                line = await asyncio.wait_for(self._readline(), timeout_s)
            except TimeoutError:
                self.console.print("\n[red]no answer: denied[/]")
                return ApprovalDecision(False, "timeout", f"no answer within {timeout_s:.0f} s")
            if line is None:
                self.console.print("\n[red]input closed: denied[/]")
                return ApprovalDecision(False, "user", "input closed")
            if line.strip().lower() in ("y", "yes"):
                return ApprovalDecision(True, "user", "approved at the terminal")
            if line.strip().lower() in ("s", "session"):  # the approval manager keeps a rule
                return ApprovalDecision(True, "user:session", "allowed for this session")
            return ApprovalDecision(False, "user", "denied at the terminal")

    async def _readline(self) -> str | None:
        """Read one line from the terminal without blocking the event loop."""
        loop = asyncio.get_running_loop()
        fd = self.stdin.fileno()
        done: asyncio.Future[str | None] = loop.create_future()
        buf = bytearray()

        def readable() -> None:
            chunk = os.read(fd, 1024)
            if not chunk:
                if not done.done():
                    done.set_result(None)
                return
            buf.extend(chunk)
            if b"\n" in buf and not done.done():
                done.set_result(buf.split(b"\n", 1)[0].decode(errors="replace"))

        loop.add_reader(fd, readable)
        try:
            return await done
        finally:
            loop.remove_reader(fd)


def choose_approver(*, yes: bool, interactive: bool | None = None) -> Approver:
    """Return the approver for a CLI command (see the module docstring)."""
    if yes:
        return AllowApprover()
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stderr.isatty()
    return ConsoleApprover() if interactive else DenyApprover()

"""``bastion chat``: the interactive REPL.

One event loop lives for the whole session (the model stays loaded). Each turn runs as an
asyncio task; while it runs, SIGINT cancels that task and the prompt comes back. At the
prompt, Ctrl-C on an empty line or EOF (Ctrl-D) ends the session.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.agent.loop import Agent
from bastion.app import App
from bastion.cli._render import EventRenderer
from bastion.cli._terminal import visible

PROMPT = "you> "
HELP = [
    ("/help", "this list"),
    ("/tools", "the tools the agent may call (and their risk)"),
    ("/model", "which model answers"),
    ("/session [NAME]", "show the session, or switch to session NAME"),
    ("/clear", "start a fresh session (the old one is kept)"),
    ("/exit", "leave (Ctrl-D works too)"),
]


def _line_buffer() -> str:
    """What the user had typed when Ctrl-C came (readline only; else assume empty)."""
    try:
        import readline

        return readline.get_line_buffer()
    except (ImportError, AttributeError):
        return ""


class ChatSession:
    """A REPL over one :class:`App`; ``session`` is the conversation id passed to the agent."""

    def __init__(
        self,
        app: App,
        session: str | None = None,
        *,
        out: IO[str] | None = None,
        console: Console | None = None,
        read: Callable[[str], str] = input,
    ) -> None:
        self.app = app
        self.agent: Agent = app.agent()
        self.session = session or Agent.new_session_id()
        self.out = out or sys.stdout
        self.console = console or Console(highlight=False)
        self.read = read
        self.loop = asyncio.new_event_loop()

    # -- slash commands -------------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Run a slash command; return False when the session should end."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        c = self.console
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            table = Table(show_header=False, box=None)
            for cmd, text in HELP:
                table.add_row(f"[bold]{escape(cmd)}[/]", text)
            c.print(table)
        elif name == "/tools":
            table = Table("tool", "risk", "sandboxed", "description", title_justify="left")
            for tool in sorted(self.app.registry, key=lambda t: t.name):
                table.add_row(escape(visible(tool.name)), tool.risk.name.lower(),
                              "yes" if tool.sandboxed else "no",
                              escape(visible(tool.description)))
            c.print(table)
        elif name == "/model":
            mc = self.app.config.model
            where = mc.base_url if mc.backend in ("openai", "ollama") else (mc.path or "shipped")
            c.print(f"model [bold]{escape(self.app.model.name)}[/] backend {mc.backend} "
                    f"({escape(str(where))}), context "
                    f"{getattr(self.app.model, 'n_ctx', None) or mc.n_ctx}, "
                    f"temperature {mc.temperature}")
        elif name == "/session":
            if arg:
                self.session = arg
            c.print(f"session [bold]{escape(self.session)}[/]")
        elif name == "/clear":
            self.session = Agent.new_session_id()
            c.print(f"new session [bold]{escape(self.session)}[/]")
        else:
            c.print(f"[red]unknown command {escape(name)}[/] (try /help)")
        return True

    # -- turns ----------------------------------------------------------------------------
    async def _turn(self, text: str) -> None:
        renderer = EventRenderer(self.out, self.console, stream=True)
        async for event in self.agent.run(text, session_id=self.session, actor="cli"):
            renderer.handle(event)
        renderer.finish()
        if renderer.error:
            self.console.print(f"[red]error: {escape(visible(renderer.error))}[/]")

    def turn(self, text: str) -> None:
        """Run one turn; Ctrl-C while it runs cancels it and returns to the prompt."""
        task = self.loop.create_task(self._turn(text))
        self.loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            self.loop.run_until_complete(task)
        except asyncio.CancelledError:
            self.out.write("\n")
            self.console.print("[yellow]cancelled[/]")
        finally:
            self.loop.remove_signal_handler(signal.SIGINT)

    def run(self) -> int:
        """The REPL; returns the exit code."""
        # A chat started from a background job of a script inherits SIGINT ignored; Ctrl-C
        # must still drop a line / leave at the prompt, so Python's own handler is put back.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        mc = self.app.config.model
        self.console.print(
            f"bastion chat: model [bold]{escape(self.app.model.name)}[/] ({mc.backend}), "
            f"session [bold]{escape(self.session)}[/]. /help for commands, Ctrl-D to leave."
        )
        try:
            while True:
                try:
                    line = self.read(PROMPT)
                except EOFError:
                    self.out.write("\n")
                    break
                except KeyboardInterrupt:
                    self.out.write("\n")
                    if _line_buffer().strip():
                        continue  # Ctrl-C with text typed: drop the line, like a shell
                    break
                line = line.strip()
                if not line:
                    continue
                if line.startswith("/"):
                    if not self.command(line):
                        break
                    continue
                self.turn(line)
        finally:
            self.loop.run_until_complete(self.app.aclose())
            self.loop.close()
        self.out.flush()
        return 0

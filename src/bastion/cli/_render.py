"""Rendering agent events in a terminal (rich) and as a machine-readable transcript."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.markup import escape

from bastion.agent.events import AgentEvent, ToolFinished, ToolStarted, TurnDone, TurnError
from bastion.cli._terminal import visible
from bastion.messages import TextDelta, ToolCall

_ARG_PREVIEW = 160
_RESULT_PREVIEW = 200


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(visible(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def call_summary(call: ToolCall) -> str:
    """Return ``name(arg=value, ...)`` on one line, long values shortened."""
    parts = [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in call.arguments.items()]
    return f"{call.name}({_one_line(', '.join(parts), _ARG_PREVIEW)})"


class EventRenderer:
    """Shows one turn: answer tokens on ``out`` as they stream, tool steps on ``err``.

    With ``stream=False`` nothing of the answer is written until :meth:`finish`, which
    writes only the final answer (what a script piping ``bastion ask`` wants).
    """

    def __init__(self, out: IO[str] | None = None, err: Console | None = None, *,
                 stream: bool = True) -> None:
        self.out = out or sys.stdout
        self.err = err or Console(stderr=True, highlight=False)
        self.stream = stream
        self._open_line = False
        self.answer: str | None = None
        self.error: str | None = None

    def _end_line(self) -> None:
        if self._open_line:
            self.out.write("\n")
            self.out.flush()
            self._open_line = False

    def handle(self, event: AgentEvent) -> None:
        """Render one event."""
        if isinstance(event, TextDelta):
            if self.stream and event.text:
                self.out.write(visible(event.text))
                self.out.flush()
                self._open_line = not event.text.endswith("\n")
        elif isinstance(event, ToolStarted):
            self._end_line()
            self.err.print(f"[cyan]→ {escape(call_summary(event.call))}[/]")
        elif isinstance(event, ToolFinished):
            res = event.result
            ms = f"{res.duration_ms:.0f} ms"
            if res.ok:
                preview = escape(_one_line(res.text, _RESULT_PREVIEW))
                self.err.print(f"[green]✓ {escape(visible(res.name))}[/] [dim]{ms}[/] {preview}")
            else:
                why = escape(_one_line(res.error or res.text, _RESULT_PREVIEW))
                name = escape(visible(res.name))
                self.err.print(f"[red]✗ {name} {res.decision}[/] [dim]{ms}[/] {why}")
        elif isinstance(event, TurnDone):
            self.answer = event.answer
            if self.stream:
                self._end_line()
        elif isinstance(event, TurnError):
            self._end_line()
            self.error = event.message

    def finish(self) -> None:
        """End the turn's output (non-streaming mode writes the answer now)."""
        if not self.stream and self.answer is not None:
            self.out.write(visible(self.answer.rstrip("\n")) + "\n")
            self.out.flush()
        self._end_line()


@dataclass
class Transcript:
    """A JSON-ready record of one turn: events (text merged per step), tool calls, answer."""

    session: str
    model: str
    events: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    answer: str | None = None
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    steps: int = 0

    def add(self, event: AgentEvent) -> None:
        """Record one event."""
        if isinstance(event, TextDelta):
            last = self.events[-1] if self.events else None
            if last is not None and last["type"] == "text":
                last["text"] += event.text
            else:
                self.events.append({"type": "text", "text": event.text})
        elif isinstance(event, ToolStarted):
            c = event.call
            self.events.append({"type": "tool_call", "step": event.step, "id": c.id,
                                "name": c.name, "arguments": c.arguments})
            self.tool_calls[c.id] = {"id": c.id, "name": c.name, "arguments": c.arguments,
                                     "step": event.step}
        elif isinstance(event, ToolFinished):
            r = event.result
            result = {"ok": r.ok, "decision": r.decision, "result": r.text, "error": r.error,
                      "duration_ms": round(r.duration_ms, 3)}
            self.events.append({"type": "tool_result", "step": event.step, "id": r.call_id,
                                "name": r.name, **result})
            self.tool_calls.setdefault(r.call_id, {"id": r.call_id, "name": r.name}).update(result)
        elif isinstance(event, TurnDone):
            self.answer = event.answer
            self.steps = event.steps
            self.usage = {"prompt_tokens": event.prompt_tokens,
                          "completion_tokens": event.completion_tokens}
            self.events.append({"type": "done", "answer": event.answer, "steps": event.steps,
                                "forced_final": event.forced_final})
        elif isinstance(event, TurnError):
            self.error = event.message
            self.events.append({"type": "error", "message": event.message})

    def to_dict(self) -> dict[str, Any]:
        """Return the transcript as plain data."""
        return {
            "ok": self.error is None and self.answer is not None,
            "session": self.session,
            "model": self.model,
            "answer": self.answer,
            "error": self.error,
            "steps": self.steps,
            "usage": self.usage,
            "tool_calls": list(self.tool_calls.values()),
            "events": self.events,
        }

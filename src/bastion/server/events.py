"""Agent events as JSON payloads for API clients (SSE, WebSocket), with secrets redacted.

Event names and payloads (each payload also carries ``"type": NAME``):

- ``text``: ``{"text"}`` — a piece of the answer (redact pieces with ``StreamRedactor``).
- ``tool_started``: ``{"step", "call_id", "name", "arguments"}``; session streams add the
  tool's declared ``risk`` and its ``sandbox`` (``_turns.tool_facts``).
- ``tool_finished``: ``{"step", "call_id", "name", "ok", "decision", "duration_ms",
  "text", "error"}`` — ``decision`` is allowed, denied or error; ``text`` is truncated.
- ``usage``: ``{"prompt_tokens", "completion_tokens"}`` of one model call.
- ``done``: ``{"answer", "steps", "prompt_tokens", "completion_tokens", "forced_final"}``.
- ``error``: ``{"message"}`` — the turn could not complete.
"""

from __future__ import annotations

from typing import Any

from bastion.agent.events import AgentEvent, ToolFinished, ToolStarted, TurnDone, TurnError
from bastion.messages import TextDelta, Usage
from bastion.security.redact import Redactor

RESULT_CHARS = 2000


def _clip(text: str, limit: int = RESULT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def event_payload(event: AgentEvent, redactor: Redactor) -> tuple[str, dict[str, Any]]:
    """Return ``(name, payload)`` for an agent event; text deltas are passed through as is."""
    if isinstance(event, TextDelta):
        return "text", {"type": "text", "text": event.text}
    if isinstance(event, ToolStarted):
        c = event.call
        return "tool_started", {
            "type": "tool_started",
            "step": event.step,
            "call_id": c.id,
            "name": c.name,
            "arguments": redactor.held_data(c.arguments),  # exact: what runs (F12)
        }
    if isinstance(event, ToolFinished):
        r = event.result
        return "tool_finished", {
            "type": "tool_finished",
            "step": event.step,
            "call_id": r.call_id,
            "name": r.name,
            "ok": r.ok,
            "decision": r.decision,
            "duration_ms": round(r.duration_ms, 3),
            "text": redactor.text(_clip(r.text)),
            "error": redactor.text(_clip(r.error)) if r.error else None,
        }
    if isinstance(event, Usage):
        return "usage", {
            "type": "usage",
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
        }
    if isinstance(event, TurnDone):
        return "done", {
            "type": "done",
            "answer": redactor.text(event.answer),
            "steps": event.steps,
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
            "forced_final": event.forced_final,
        }
    if isinstance(event, TurnError):
        return "error", {"type": "error", "message": redactor.text(event.message)}
    raise TypeError(f"not an agent event: {event!r}")  # pragma: no cover - exhaustive above

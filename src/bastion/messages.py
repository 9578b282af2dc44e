"""The message vocabulary: plain dataclasses for messages, tool calls and model events.

The bottom layer of bastion (it imports nothing from the package), so every layer may use it:
``tools``, ``security``, ``llm`` and everything above. It lived in ``bastion.messages`` until
2026-12; that path is a re-export kept for branches in flight.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


def new_call_id() -> str:
    """Return a fresh tool-call id."""
    return "call_" + uuid.uuid4().hex[:16]


@dataclass(slots=True)
class ToolCall:
    """A request from the model to run one tool."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)

    def arguments_json(self) -> str:
        """Return the arguments as compact JSON."""
        return json.dumps(self.arguments, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    # A tool message's step as a client showed it (risk, sandbox, decision, approval), kept
    # for showing the transcript again; never sent to a model (not in ``to_openai``).
    step: dict[str, Any] | None = None

    def to_openai(self) -> dict[str, Any]:
        """Return the OpenAI chat-completions wire form."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json()},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            out["name"] = self.name
        return out


@dataclass(slots=True, frozen=True)
class ToolSpec:
    """What a model is told about a tool: name, description, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        """Return the OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(slots=True, frozen=True)
class TextDelta:
    """A piece of streamed answer text."""

    text: str


@dataclass(slots=True, frozen=True)
class ToolCallEvent:
    """The model decided to call a tool (arguments complete and parsed)."""

    call: ToolCall


@dataclass(slots=True, frozen=True)
class Usage:
    """Token counts of one model call."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True, frozen=True)
class Finish:
    """The model call ended; ``reason`` is stop, length, tool_calls or error."""

    reason: str


ModelEvent = TextDelta | ToolCallEvent | Usage | Finish


@dataclass(slots=True)
class ChatSettings:
    """Per-call generation settings."""

    temperature: float = 0.0
    max_tokens: int = 512
    tool_choice: str = "auto"  # "auto" | "none" | "required" | a tool name
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

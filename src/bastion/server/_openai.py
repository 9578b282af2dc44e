"""OpenAI chat-completions wire format: request bodies and the conversions to bastion messages."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import ConfigDict, Field

from bastion.messages import ChatSettings, Message, ToolCall, ToolSpec
from bastion.server.contract import ApiModel
from bastion.server.errors import ApiError

AGENT_MODEL = "bastion-agent"
SESSION_HEADER = "X-Bastion-Session"
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"


class _Wire(ApiModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Wire):
    """One part of a multi-part message content; only text parts are supported."""

    type: str
    text: str | None = None


class WireFunction(_Wire):
    """The function of a tool call in a message."""

    name: str
    arguments: str | dict[str, Any] = "{}"


class WireToolCall(_Wire):
    """A tool call inside an assistant message."""

    id: str | None = None
    type: str = "function"
    function: WireFunction


class WireMessage(_Wire):
    """One chat message as OpenAI clients send it."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: str | None = None


class WireFunctionDef(_Wire):
    """A function a client offers the model."""

    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class WireTool(_Wire):
    """A tool a client offers the model (pass-through models only)."""

    type: Literal["function"] = "function"
    function: WireFunctionDef


class StreamOptions(_Wire):
    """``stream_options``: ``include_usage`` adds a last chunk with token counts."""

    include_usage: bool = False


class ChatCompletionRequest(_Wire):
    """``POST /v1/chat/completions``; unknown OpenAI fields are accepted and ignored."""

    model: str = Field(min_length=1)
    messages: list[WireMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1, description="only 1 is supported")
    tools: list[WireTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = Field(
        default=None, description="only {'type': 'text'} is supported"
    )
    user: str | None = Field(default=None, description="bastion-agent: used as the session id")
    session_id: str | None = Field(
        default=None,
        pattern=SESSION_ID_PATTERN,
        description="bastion-agent: continue this session (also the X-Bastion-Session header)",
    )


def text_of(msg: WireMessage, index: int) -> str:
    """Return the text content of a wire message (text parts joined)."""
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    texts = []
    for part in msg.content:
        if part.type != "text" or part.text is None:
            raise ApiError(
                400, f"messages.{index}: content part of type {part.type!r} is not supported",
                code="unsupported_content", param=f"messages.{index}.content",
                fix="send text content only",
            )
        texts.append(part.text)
    return "".join(texts)


def _arguments(fn: WireFunction, where: str) -> dict[str, Any]:
    if isinstance(fn.arguments, dict):
        return fn.arguments
    try:
        value = json.loads(fn.arguments or "{}")
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"{where}: function arguments are not valid JSON", code="invalid_tool_call",
            param=where,
        ) from exc
    if not isinstance(value, dict):
        raise ApiError(400, f"{where}: function arguments must be a JSON object",
                       code="invalid_tool_call", param=where)
    return value


def to_messages(wire: list[WireMessage]) -> list[Message]:
    """Convert wire messages to bastion messages (``developer`` is a system message)."""
    out: list[Message] = []
    for i, m in enumerate(wire):
        text = text_of(m, i)
        if m.role in ("system", "developer"):
            out.append(Message("system", text))
        elif m.role == "user":
            out.append(Message("user", text))
        elif m.role == "assistant":
            calls = [
                ToolCall(c.function.name, _arguments(c.function, f"messages.{i}.tool_calls.{j}"),
                         id=c.id or f"call_{i}_{j}")
                for j, c in enumerate(m.tool_calls or [])
            ]
            out.append(Message("assistant", text, tool_calls=calls))
        else:
            if not m.tool_call_id:
                raise ApiError(400, f"messages.{i}: a tool message needs tool_call_id",
                               code="invalid_message", param=f"messages.{i}.tool_call_id")
            out.append(Message("tool", text, tool_call_id=m.tool_call_id, name=m.name))
    return out


def to_tool_specs(tools: list[WireTool] | None) -> list[ToolSpec]:
    """Convert the request's tools to specs."""
    return [
        ToolSpec(t.function.name, t.function.description, t.function.parameters)
        for t in tools or []
    ]


def settings_from(req: ChatCompletionRequest, base: ChatSettings) -> ChatSettings:
    """Return ``base`` with the request's generation settings applied."""
    kind = (req.response_format or {}).get("type", "text")
    if kind != "text":
        raise ApiError(400, f"response_format {kind!r} is not supported by this server",
                       code="unsupported_response_format", param="response_format",
                       fix="omit response_format, or ask for JSON in the prompt")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or base.stop)
    choice = base.tool_choice
    if isinstance(req.tool_choice, str):
        if req.tool_choice not in ("auto", "none", "required"):
            raise ApiError(400, f"tool_choice {req.tool_choice!r} is not one of auto, none, "
                           "required", code="invalid_tool_choice", param="tool_choice")
        choice = req.tool_choice
    elif isinstance(req.tool_choice, dict):
        name = (req.tool_choice.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "tool_choice must name a function", code="invalid_tool_choice",
                           param="tool_choice")
        choice = name
    return ChatSettings(
        temperature=base.temperature if req.temperature is None else req.temperature,
        max_tokens=req.max_completion_tokens or req.max_tokens or base.max_tokens,
        tool_choice=choice,
        stop=stop,
        seed=base.seed if req.seed is None else req.seed,
    )


def completion_id() -> str:
    """Return a fresh ``chatcmpl-`` id."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def wire_tool_calls(calls: list[ToolCall], *, indexed: bool = False) -> list[dict[str, Any]]:
    """Return tool calls in wire form (``indexed`` for stream deltas)."""
    out = []
    for i, c in enumerate(calls):
        item: dict[str, Any] = {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments_json()},
        }
        if indexed:
            item["index"] = i
        out.append(item)
    return out


def usage_dict(prompt: int, completion: int) -> dict[str, int]:
    """Return an OpenAI usage object."""
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


class ChunkMaker:
    """Builds ``chat.completion.chunk`` objects sharing one id, model and timestamp."""

    def __init__(self, model: str) -> None:
        self.id = completion_id()
        self.model = model
        self.created = int(time.time())

    def chunk(
        self,
        delta: dict[str, Any] | None = None,
        finish: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Return one chunk with a single choice."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
            **extra,
        }

    def usage_chunk(self, prompt: int, completion: int) -> dict[str, Any]:
        """Return the ``include_usage`` chunk (no choices)."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_dict(prompt, completion),
        }

    def completion(
        self,
        text: str | None,
        finish: str,
        prompt: int,
        completion: int,
        *,
        calls: list[ToolCall] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Return a whole (non-stream) ``chat.completion``."""
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = wire_tool_calls(calls)
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage_dict(prompt, completion),
            **extra,
        }

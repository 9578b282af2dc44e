"""Shared by the patterns: run a model to completion, replay a held reply, check tool calls."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.errors import ModelOutputError
from bastion.llm.base import Model
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)


@dataclass(slots=True)
class Held:
    """One model's complete reply, held back until a pattern decides to show it."""

    model: str
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish: str = "stop"
    error: ModelOutputError | None = None

    @property
    def empty(self) -> bool:
        """No text (beyond whitespace) and no tool call."""
        return not self.text.strip() and not self.calls

    def usage(self) -> Usage:
        """The token counts of this reply."""
        return Usage(self.prompt_tokens, self.completion_tokens)


async def collect(
    model: Model,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    settings: ChatSettings,
) -> Held:
    """Run ``model`` to the end; a :class:`ModelOutputError` is kept, not raised."""
    held = Held(getattr(model, "name", "model"))
    text: list[str] = []
    stream = model.chat(messages, tools, settings=settings)
    try:
        async for ev in stream:
            if isinstance(ev, TextDelta):
                text.append(ev.text)
            elif isinstance(ev, ToolCallEvent):
                held.calls.append(ev.call)
            elif isinstance(ev, Usage):
                held.prompt_tokens += ev.prompt_tokens
                held.completion_tokens += ev.completion_tokens
            elif isinstance(ev, Finish):
                held.finish = ev.reason
    except ModelOutputError as exc:
        held.error = exc
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    held.text = "".join(text)
    return held


def replay(held: Held, extra: Usage | None = None) -> Iterator[ModelEvent]:
    """The events of a held reply: its text as one delta, its calls once, usage, finish."""
    if held.text:
        yield TextDelta(held.text)
    for call in held.calls:
        yield ToolCallEvent(call)
    prompt, completion = held.prompt_tokens, held.completion_tokens
    if extra is not None:
        prompt += extra.prompt_tokens
        completion += extra.completion_tokens
    yield Usage(prompt, completion)
    yield Finish("tool_calls" if held.calls else held.finish)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if not kinds:
        return True
    for k in kinds:
        if k == "null" and value is None:
            return True
        types = _JSON_TYPES.get(k)
        if types is None:
            return True  # a type we do not check
        if isinstance(value, bool) and k in ("integer", "number"):
            continue
        if isinstance(value, types):
            enum = schema.get("enum")
            return enum is None or value in enum
    return False


def call_problem(call: ToolCall, tools: Sequence[ToolSpec]) -> str | None:
    """Why ``call`` is not a valid call of one of ``tools`` (``None``: it is)."""
    spec = next((t for t in tools if t.name == call.name), None)
    if spec is None:
        return f"unknown tool {call.name!r}"
    params = spec.parameters or {}
    props: dict[str, Any] = params.get("properties") or {}
    for name in params.get("required") or []:
        if name not in call.arguments:
            return f"{call.name}: missing required argument {name!r}"
    for name, value in call.arguments.items():
        schema = props.get(name)
        if schema is None:
            if params.get("additionalProperties") is False:
                return f"{call.name}: unexpected argument {name!r}"
            continue
        if not _type_ok(value, schema):
            return f"{call.name}: argument {name!r} has the wrong type"
    return None


async def close_all(models: Sequence[Model]) -> None:
    """Close each distinct model (the same instance may appear twice)."""
    seen: set[int] = set()
    for m in models:
        if id(m) not in seen:
            seen.add(id(m))
            await m.aclose()


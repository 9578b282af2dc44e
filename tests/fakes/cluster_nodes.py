"""Scripted per-node models for unit tests of the cluster router's logic (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx

from bastion.errors import ModelHTTPError, ModelUnreachable
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


def _dead(kind: str) -> Exception:
    """The error HttpModel raises for each failure (typed, transport errors as the cause)."""
    req = httpx.Request("POST", "http://node/v1/chat/completions")
    if kind in ("500", "400"):  # a status answer: no transport error behind it
        return ModelHTTPError(f"model server http://node/v1 answered {kind}: boom",
                              status_code=int(kind), body='{"error": "boom"}')
    cause: Exception = (httpx.ConnectError("connection refused", request=req) if kind == "connect"
                        else httpx.RemoteProtocolError("peer closed connection", request=req))
    try:
        raise cause
    except Exception as exc:  # chain it like HttpModel does
        err = ModelUnreachable(f"node failed: {kind}")
        err.__cause__ = exc
        return err


@dataclass
class Behaviour:
    """What a fake node does on its next calls."""

    text: str = "one two three four five six"
    fail: str | None = None  # connect | cut | 500 | 400
    cut_after: int = 0  # with fail="cut": tokens streamed before dying
    delay_s: float = 0.0  # before the first event
    calls: list[ToolCall] = field(default_factory=list)


class FakeNodeModel:
    """A node client that streams ``behaviour.text`` word by word or fails as told."""

    def __init__(self, name: str, behaviour: Behaviour | None = None) -> None:
        self.name = name
        self.behaviour = behaviour or Behaviour()
        self.seen: list[list[Message]] = []
        self.closed = False

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        b = self.behaviour
        self.seen.append(list(messages))
        if b.delay_s:
            await asyncio.sleep(b.delay_s)
        if b.fail in ("connect", "500", "400"):
            raise _dead(b.fail)
        words = b.text.split(" ")
        tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
        prefill = messages[-1].content if messages and messages[-1].role == "assistant" else ""
        if prefill:  # continue after the partial answer, like vLLM's continue_final_message
            tokens = tokens[len(prefill.split(" ")) :]
        for i, tok in enumerate(tokens):
            if b.fail == "cut" and i == b.cut_after:
                raise _dead("cut")
            yield TextDelta(tok)
            await asyncio.sleep(0)
        if b.fail == "cut" and b.cut_after >= len(tokens):  # every token sent, then died
            raise _dead("cut")
        if b.fail == "cut" and b.calls:
            for c in b.calls:
                yield ToolCallEvent(c)
            raise _dead("cut")
        for c in b.calls:
            yield ToolCallEvent(c)
        yield Usage(10, len(tokens))
        yield Finish("tool_calls" if b.calls else "stop")

    async def aclose(self) -> None:
        self.closed = True

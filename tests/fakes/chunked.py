"""A model that streams a fixed reply in fixed-size character chunks (splits placeholders)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

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


class ChunkedModel:
    """Streams ``text`` ``size`` characters at a time, then ``calls``; records what it saw."""

    def __init__(self, text: str, size: int = 3, calls: Sequence[ToolCall] = (),
                 name: str = "chunked", fail: Exception | None = None) -> None:
        self.name = name
        self.text = text
        self.size = size
        self.calls = list(calls)
        self.fail = fail
        self.seen: list[list[Message]] = []
        self.closed = False

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        self.seen.append(list(messages))
        if self.fail is not None:
            raise self.fail
        for i in range(0, len(self.text), self.size):
            yield TextDelta(self.text[i : i + self.size])
        for c in self.calls:
            yield ToolCallEvent(c)
        yield Usage(10, len(self.text) // 4)
        yield Finish("tool_calls" if self.calls else "stop")

    async def aclose(self) -> None:
        self.closed = True

"""A model that streams its first sentence, then waits for a signal before writing the rest.

For the voice tests: the spoken answer must start before the model has finished, which this
model makes observable without timing (if the voice pipeline waited for the whole answer, the
gate would never open).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolSpec,
    Usage,
)


class GatedModel:
    """Streams ``first`` word by word, awaits :attr:`gate`, then streams ``rest``."""

    name = "gated"

    def __init__(self, first: str, rest: str) -> None:
        self.first = first
        self.rest = rest
        self.gate = asyncio.Event()
        self.waited = False

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        for word in self.first.split(" "):
            yield TextDelta(word + " ")
        self.waited = True
        await self.gate.wait()
        words = self.rest.split(" ")
        for i, word in enumerate(words):
            yield TextDelta(word if i == len(words) - 1 else word + " ")
        yield Usage(10, len(words))
        yield Finish("stop")

    async def aclose(self) -> None:
        return None

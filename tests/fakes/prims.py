"""Scripted primitives for the constrained tool-calling protocol (unit tests of its logic)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from bastion.messages import ChatSettings, Finish, Usage


class Prims:
    """Scripted primitives: option scores, completions, streamed text; records prompts."""

    prefill = True

    def __init__(
        self,
        scores: list[float] | None = None,
        completions: Sequence[str] = (),
        text: str = "hello there",
    ) -> None:
        self.scores = scores
        self.completions = list(completions)
        self.text = text
        self.schemas: list[dict[str, Any] | None] = []
        self.prompts: list[list[dict[str, str]]] = []
        self.prefixes: list[str] = []

    async def complete(
        self, messages: Any, *, schema: dict[str, Any] | None, max_tokens: int, prefix: str = ""
    ) -> tuple[str, Usage]:
        self.schemas.append(schema)
        self.prompts.append(messages)
        self.prefixes.append(prefix)
        return self.completions.pop(0), Usage(10, 3)

    async def score(self, messages: Any, prefix: str, options: Sequence[str]) -> list[float] | None:
        self.prompts.append(messages)
        return self.scores

    async def stream(self, messages: Any, settings: ChatSettings) -> AsyncIterator[Any]:
        self.prompts.append(messages)
        for w in self.text.split(" "):
            yield w + " "
        yield Usage(5, 2)
        yield Finish("stop")

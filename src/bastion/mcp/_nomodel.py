"""The model of a tools-only process (``bastion mcp serve``, ``bastion gateway serve``).

Such a process serves tool calls through the gateway; it runs no agent, so it does not
load a model. Anything that asks it to chat gets a clear error instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from bastion.errors import ModelError
from bastion.messages import ChatSettings, Message, ModelEvent, ToolSpec


class ToolsOnlyModel:
    """A :class:`~bastion.llm.base.Model` that refuses to chat."""

    name = "tools-only"

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        raise ModelError("this process serves tools only and runs no model",
                         fix="use 'bastion chat' or 'bastion serve' for the agent")
        yield  # pragma: no cover - makes this an async generator

    async def aclose(self) -> None:
        return None

"""The ``Model`` seam: every backend (embedded, HTTP, cluster, privacy router) implements it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from bastion.messages import ChatSettings, Message, ModelEvent, ToolSpec


@runtime_checkable
class Model(Protocol):
    """A chat model that streams events.

    ``chat`` yields :class:`TextDelta` pieces and/or :class:`ToolCallEvent` s, then
    :class:`Usage` (when known) and exactly one :class:`Finish`. Tool calls are always
    complete and parsed; a backend that cannot produce valid calls raises
    :class:`bastion.errors.ModelOutputError` after its own repair attempts.
    """

    name: str

    def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        """Stream the model's reply to ``messages``, offering ``tools``."""
        ...

    async def aclose(self) -> None:
        """Release resources (processes, connections, model memory)."""
        ...


@runtime_checkable
class WrapperModel(Protocol):
    """A model made of other models (secret guard, privacy router, patterns).

    ``wrapped`` is the one name for the models inside, so code that looks for a particular
    model behind the wrappers (the cluster, say) walks one attribute.
    """

    @property
    def wrapped(self) -> Sequence[Model]:
        """Return the models this one delegates to."""
        ...


async def relay(stream: AsyncIterator[ModelEvent]) -> AsyncIterator[ModelEvent]:
    """Yield ``stream``'s events; close it when the consumer stops early (HTTP, llama).

    Models that wrap other models (privacy router, patterns) relay an inner stream this way,
    so an abandoned turn releases the inner model's connection or generation at once.
    """
    try:
        async for ev in stream:
            yield ev
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()

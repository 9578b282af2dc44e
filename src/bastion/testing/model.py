"""A scripted :class:`~bastion.llm.base.Model`: replies are given up front, calls are recorded.

For unit tests of logic around the model seam (an agent loop, a tool, a plugin)::

    from bastion.testing import ScriptedModel, call, say

    model = ScriptedModel(call("read_file", path="notes.txt"), say("done"))
    app = build_app(config, model=model)
    ...
    assert model.seen[1].messages[-1].role == "tool"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from bastion.errors import ModelOutputError
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


@dataclass
class Reply:
    """One scripted model reply: text (streamed word by word), tool calls, or a failure."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    fail: bool = False  # raise ModelOutputError (broken tool JSON)


def say(text: str) -> Reply:
    """Return a reply that streams ``text``."""
    return Reply(text=text)


def call(name: str, **arguments: object) -> Reply:
    """Return a reply that calls tool ``name`` with ``arguments``."""
    return Reply(calls=[ToolCall(name, dict(arguments))])


@dataclass
class SeenCall:
    """What the model was sent in one ``chat`` call."""

    messages: list[Message]
    tools: list[ToolSpec]
    settings: ChatSettings


class ScriptedModel:
    """Plays back ``replies`` in order; records what it was sent."""

    name = "scripted"

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.seen: list[SeenCall] = []
        self.closed = False

    async def chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *,
                   settings: ChatSettings | None = None) -> AsyncIterator[ModelEvent]:
        """Record the call and play back the next reply (text word by word, then calls)."""
        self.seen.append(SeenCall(list(messages), list(tools), settings or ChatSettings()))
        if not self.replies:
            raise AssertionError("ScriptedModel ran out of replies")
        reply = self.replies.pop(0)
        if reply.fail:
            raise ModelOutputError("model produced invalid tool JSON")
        words = reply.text.split(" ") if reply.text else []
        for i, word in enumerate(words):
            yield TextDelta(word if i == 0 else " " + word)
        for c in reply.calls:
            yield ToolCallEvent(c)
        yield Usage(sum(len(m.content) for m in messages) // 4, len(words))
        yield Finish("tool_calls" if reply.calls else "stop")

    async def aclose(self) -> None:
        """Mark the model closed."""
        self.closed = True

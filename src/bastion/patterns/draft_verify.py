"""Draft and verify: one model drafts, another checks it and either approves or rewrites it.

The drafter's reply is held. The verifier gets the conversation plus the draft (its text
or its proposed tool calls) and an instruction: answer exactly ``APPROVED`` when the draft
is correct and complete, otherwise give the corrected final answer (or make the right tool
call itself: it is offered the same tools). The verifier's stream is held only until its
first characters tell ``APPROVED`` apart from a rewrite; then either the draft is emitted
(and the verifier stopped) or the verifier's own answer streams on. Either way exactly one
model's tool calls reach the agent.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from bastion.llm.base import Model, relay
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from bastion.patterns._common import Held, close_all, collect, replay

APPROVED = "APPROVED"
VERIFY_PROMPT = (
    "Below is a draft reply to the conversation above, written by another assistant.\n"
    "{draft}\n"
    "Check it against the conversation. If it is correct and complete, reply with exactly "
    "the word APPROVED and nothing else. Otherwise reply with the corrected final answer "
    "only (or call the right tool)."
)


def describe_draft(held: Held) -> str:
    """Return the draft as the verifier reads it."""
    if held.calls:
        calls = "; ".join(f"{c.name}({json.dumps(c.arguments, ensure_ascii=False)})"
                          for c in held.calls)
        return f"Draft: call the tool {calls}"
    return f"Draft answer:\n{held.text.strip()}"


@dataclass(slots=True)
class DraftRecord:
    """How one request went: ``approved``, ``revised`` or ``no_draft``."""

    outcome: str = ""
    drafter: str = ""
    verifier: str = ""


class DraftVerifyModel:
    """A :class:`~bastion.llm.base.Model`: a drafter proposes, a verifier approves or revises."""

    def __init__(self, drafter: Model, verifier: Model) -> None:
        """Draft with ``drafter``, check with ``verifier``."""
        self.drafter = drafter
        self.verifier = verifier
        self.name = f"draft_verify:{drafter.name}>{verifier.name}"
        self.history: list[DraftRecord] = []

    @property
    def wrapped(self) -> Sequence[Model]:
        """Return the models this one delegates to."""
        return (self.drafter, self.verifier)

    @property
    def models(self) -> list[Model]:
        """Drafter and verifier."""
        return [self.drafter, self.verifier]

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        """Draft, verify, then stream the approved draft or the verifier's revision."""
        settings = settings or ChatSettings()
        record = DraftRecord(drafter=self.drafter.name, verifier=self.verifier.name)
        self.history.append(record)
        del self.history[:-200]
        draft = await collect(self.drafter, messages, tools, settings)
        spent = draft.usage()
        if draft.error is not None or draft.empty:
            record.outcome = "no_draft"
            yield spent
            async for ev in relay(self.verifier.chat(messages, tools, settings=settings)):
                yield ev
            return
        check = [*messages, Message("user", VERIFY_PROMPT.format(draft=describe_draft(draft)))]
        stream = self.verifier.chat(check, tools, settings=settings)
        head = ""
        pending: list[ModelEvent] = []  # held until APPROVED is ruled in or out
        decided = False
        try:
            async for ev in stream:
                if decided:
                    yield ev
                    continue
                if isinstance(ev, TextDelta):
                    head += ev.text
                    pending.append(ev)
                    probe = head.lstrip().upper()
                    if probe.startswith(APPROVED):
                        record.outcome = "approved"
                        break
                    if len(probe) >= len(APPROVED) or not APPROVED.startswith(probe):
                        decided = True
                elif isinstance(ev, ToolCallEvent | Finish):
                    decided = True  # the verifier acted itself: its reply replaces the draft
                    pending.append(ev)
                else:
                    pending.append(ev)
                if decided:
                    record.outcome = "revised"
                    yield spent
                    for p in pending:
                        yield p
                    pending.clear()
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        if record.outcome == "approved":
            used = [p for p in pending if isinstance(p, Usage)]
            extra = Usage(sum(u.prompt_tokens for u in used),
                          sum(u.completion_tokens for u in used))
            for ev in replay(draft, extra):
                yield ev
        elif not decided:  # the verifier ended while its head still looked like APPROVED
            record.outcome = "revised"
            yield spent
            for p in pending:
                yield p

    async def aclose(self) -> None:
        """Close both models once."""
        await close_all([self.drafter, self.verifier])

"""Vote (self-consistency): several samples or several models, the majority answer wins.

Each voter model is asked ``samples`` times: the first sample with the request's own settings,
the others at ``temperature`` with distinct seeds. Replies are compared by what they *do*:
tool calls by name and canonical (sorted-key JSON) arguments, text answers by their
normalised form (case, whitespace and trailing punctuation ignored). The most frequent wins;
a tie goes to the earliest reply (the first model's greedy sample). Replies that failed
(``ModelOutputError``) do not vote. The winner's events are emitted once: its text, its tool
calls (never another sample's), usage summed over every sample, one finish.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from bastion.errors import ConfigError
from bastion.llm.base import Model
from bastion.messages import ChatSettings, Message, ModelEvent, ToolSpec, Usage
from bastion.patterns._common import Held, close_all, collect, replay

_SPACE = re.compile(r"\s+")


def vote_key(held: Held) -> str:
    """Return what a reply is compared by: its calls, or its normalised text."""
    if held.calls:
        return "calls:" + json.dumps(
            [[c.name, c.arguments] for c in held.calls], sort_keys=True, ensure_ascii=False
        )
    return "text:" + _SPACE.sub(" ", held.text.strip().lower()).rstrip(" .!")


@dataclass(slots=True)
class VoteRecord:
    """How one request was voted on."""

    votes: dict[str, int] = field(default_factory=dict)  # key -> count
    winner: str = ""
    samples: int = 0
    failed: int = 0


class VoteModel:
    """A :class:`~bastion.llm.base.Model` answering with the majority of several replies."""

    def __init__(
        self, models: Sequence[Model], *, samples: int = 3, temperature: float = 0.7
    ) -> None:
        """Ask each of ``models`` ``samples`` times (``temperature`` after the first)."""
        if not models or samples < 1 or len(models) * samples < 2:
            raise ConfigError(
                "a vote needs at least two replies",
                fix="set patterns.samples >= 2 or list several patterns.models",
            )
        self._models = list(models)
        self.samples = samples
        self.temperature = temperature
        self.name = f"vote{len(self._models) * samples}:" + ",".join(m.name for m in self._models)
        self.history: list[VoteRecord] = []

    @property
    def wrapped(self) -> Sequence[Model]:
        """Return the models this one delegates to."""
        return tuple(self._models)

    @property
    def models(self) -> list[Model]:
        """The voter models."""
        return list(self._models)

    def _plan(self, settings: ChatSettings) -> list[tuple[Model, ChatSettings]]:
        base_seed = settings.seed if settings.seed is not None else 1234
        plan = []
        for m in self._models:
            for k in range(self.samples):
                if k == 0:
                    plan.append((m, settings))
                else:
                    plan.append((m, replace(settings, stop=list(settings.stop),
                                            temperature=self.temperature, seed=base_seed + k)))
        return plan

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        """Collect every sample, then emit the majority reply."""
        settings = settings or ChatSettings()
        plan = self._plan(settings)
        replies = await asyncio.gather(*(collect(m, messages, tools, s) for m, s in plan))
        record = VoteRecord(samples=len(replies))
        self.history.append(record)
        del self.history[:-200]
        valid = [r for r in replies if r.error is None and not r.empty]
        record.failed = len(replies) - len(valid)
        if not valid:
            errors = [r.error for r in replies if r.error is not None]
            if errors:
                raise errors[0]
            valid = list(replies)  # every sample was empty: show the (empty) first one
        for r in valid:
            key = vote_key(r)
            record.votes[key] = record.votes.get(key, 0) + 1
        best = max(record.votes.values())
        winner = next(r for r in valid if record.votes[vote_key(r)] == best)
        record.winner = vote_key(winner)
        others = [r for r in replies if r is not winner]
        spent = Usage(sum(r.prompt_tokens for r in others),
                      sum(r.completion_tokens for r in others))
        for ev in replay(winner, spent):
            yield ev

    async def aclose(self) -> None:
        """Close every model once."""
        await close_all(self._models)

"""Cascade: the small, fast model answers first; a larger one only when the answer looks weak.

The first models' replies are held (not streamed) until they pass the checks; the last
model streams live. A reply *escalates* to the next model when:

* ``invalid_tool_call``: the backend gave up on the call's JSON (``ModelOutputError``), or a
  call names an unknown tool, lacks a required argument or has one of the wrong JSON type;
* ``empty``: no text and no tool call;
* ``truncated``: the answer stopped at ``max_tokens`` (``escalate_on_length``);
* ``low_confidence``: the mean token log-probability of a text answer, scored by the model
  itself (teacher-forced over the answer and end-of-turn), is below ``min_logprob``. Only
  models that can score text have this signal (the embedded llama.cpp backend); over HTTP
  the other signals still apply.

Each decision is kept in ``history`` (which model answered, why the others did not).
Usage of discarded replies is added to the final ``Usage`` event, so token accounting is
honest; a tool call is emitted exactly once, by the model whose reply is shown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from bastion.errors import ConfigError
from bastion.llm.base import Model, relay
from bastion.messages import ChatSettings, Message, ModelEvent, ToolSpec, Usage
from bastion.patterns._common import Held, call_problem, close_all, collect, replay


@dataclass(slots=True)
class CascadeRecord:
    """How one request went through the cascade."""

    answered_by: str = ""
    escalations: list[tuple[str, str]] = field(default_factory=list)  # (model, reason)
    logprobs: dict[str, float] = field(default_factory=dict)


async def mean_logprob(model: Model, messages: Sequence[Message], text: str) -> float | None:
    """Return the model's mean log-probability per token of ``text`` as its reply, or None."""
    score = getattr(model, "score", None)
    if score is None or not text:
        return None
    from bastion.llm._constrained import plain_messages

    values = await score(plain_messages(messages), "", [text])
    if not values:
        return None
    count = getattr(model, "count_tokens", None)
    if count is not None:
        n = int(count([Message("assistant", text)])) - int(count([Message("assistant", "")]))
    else:
        n = len(text) // 4
    return float(values[0]) / (max(1, n) + 1)  # + the end-of-turn token the score includes


class CascadeModel:
    """A :class:`~bastion.llm.base.Model` that escalates from cheaper to larger models."""

    def __init__(
        self,
        models: Sequence[Model],
        *,
        min_logprob: float | None = -2.5,
        escalate_on_length: bool = True,
    ) -> None:
        """Try ``models`` in order (smallest first); the last one always answers."""
        if len(models) < 2:
            raise ConfigError(
                "a cascade needs at least two models",
                fix="list a small and a larger model under patterns.models",
            )
        self._models = list(models)
        self.min_logprob = min_logprob
        self.escalate_on_length = escalate_on_length
        self.name = "cascade:" + ">".join(m.name for m in self._models)
        self.history: list[CascadeRecord] = []

    @property
    def wrapped(self) -> Sequence[Model]:
        """Return the models this one delegates to."""
        return tuple(self._models)

    @property
    def models(self) -> list[Model]:
        """The models, in escalation order."""
        return list(self._models)

    async def problem(
        self, model: Model, messages: Sequence[Message], tools: Sequence[ToolSpec], held: Held,
        record: CascadeRecord,
    ) -> str | None:
        """Why ``held`` should not be shown (``None``: it is good enough)."""
        if held.error is not None:
            return "invalid_tool_call"
        for call in held.calls:
            if call_problem(call, tools) is not None:
                return "invalid_tool_call"
        if held.empty:
            return "empty"
        if self.escalate_on_length and held.finish == "length":
            return "truncated"
        if self.min_logprob is not None and not held.calls:
            lp = await mean_logprob(model, messages, held.text)
            if lp is not None:
                record.logprobs[model.name] = lp
                if lp < self.min_logprob:
                    return "low_confidence"
        return None

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        """Answer with the first model whose reply passes the checks (the last streams live)."""
        settings = settings or ChatSettings()
        record = CascadeRecord()
        self.history.append(record)
        del self.history[:-200]
        spent = Usage(0, 0)
        for model in self._models[:-1]:
            held = await collect(model, messages, tools, settings)
            reason = await self.problem(model, messages, tools, held, record)
            if reason is None:
                record.answered_by = model.name
                for ev in replay(held, spent):
                    yield ev
                return
            record.escalations.append((model.name, reason))
            spent = Usage(spent.prompt_tokens + held.prompt_tokens,
                          spent.completion_tokens + held.completion_tokens)
        last = self._models[-1]
        record.answered_by = last.name
        if spent.prompt_tokens or spent.completion_tokens:
            yield spent  # the discarded attempts' tokens were spent too
        async for ev in relay(last.chat(messages, tools, settings=settings)):
            yield ev

    async def aclose(self) -> None:
        """Close every model once."""
        await close_all(self._models)


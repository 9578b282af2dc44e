"""The privacy router: a :class:`~bastion.llm.base.Model` choosing local or remote per request.

Every message of the request (system, user, assistant text and tool-call arguments, tool
results) is scanned for PII. With the per-class policy:

* ``local_only``: a class found anywhere in the context sends the whole request to the local
  model; nothing leaves the machine (and stays so while that message is in the window);
* ``redact``: the remote model gets the values replaced by stable placeholders
  (``<PERSON_1>``); placeholders in its streamed answer and in the arguments of its calls to
  local-only tools are turned back into the values before the agent (and the user) see them.
  Calls to tools that can send data off the machine (``web_fetch``, ``browser_*``, MCP
  servers, networked sandboxes: the ``egress`` predicate) keep the placeholders, so the
  remote model cannot make bastion send a value it was never shown;
* ``allow``: sent as is.

Every decision is written to the audit log (``privacy.route``) with class counts, never the
values. Sits between memory and the cluster router on the request path:
``Agent.run -> memory.window -> PrivacyRouter -> (cluster router) -> Model.chat``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from bastion.errors import ClusterError, ModelError, ModelOutputError
from bastion.llm.base import Model, relay
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
)
from bastion.privacy.placeholders import StreamRestorer
from bastion.privacy.policy import Decision, PrivacyPolicy


class PrivacyRouter:
    """Routes each request to the local or the remote model according to the PII it holds."""

    def __init__(
        self,
        local: Model,
        remote: Model,
        policy: PrivacyPolicy,
        *,
        audit: Any = None,
        fallback_local: bool = True,
        egress: Callable[[str], bool] | None = None,
    ) -> None:
        """Wrap ``local`` and ``remote``.

        Args:
            local: the model that may see everything.
            remote: the model that only sees what the policy lets out.
            policy: the PII detector and per-class policy.
            audit: an :class:`~bastion.security.audit.AuditLog` (``record``) or ``None``.
            fallback_local: answer locally when the remote fails before anything was shown.
            egress: whether the tool of that name can send data out; placeholders are
                restored only into calls of tools for which it is False (default: none).

        """
        self.local = local
        self.remote = remote
        self.policy = policy
        self.audit = audit
        self.fallback_local = fallback_local
        self.egress = egress or (lambda name: True)
        self.name = f"privacy:{local.name}|{remote.name}"
        self.history: list[Decision] = []

    @property
    def wrapped(self) -> Sequence[Model]:
        """Return the models this one delegates to."""
        return (self.local, self.remote)

    @property
    def models(self) -> list[Model]:
        """The wrapped models (local first), for tools that look inside wrappers."""
        return [self.local, self.remote]

    def decide(self, messages: Sequence[Message]) -> Decision:
        """Return where ``messages`` would be routed (nothing is sent or audited)."""
        return self.policy.analyze(messages).decision

    def _record(self, decision: Decision, label: str | None = None, **extra: Any) -> None:
        self.history.append(decision)
        del self.history[:-200]
        if self.audit is None:
            return
        detail = decision.to_dict()
        detail.update(extra)
        target = self.local if decision.route == "local" else self.remote
        detail["model"] = getattr(target, "name", None)
        self.audit.record(
            "privacy.route",
            actor="privacy",
            decision=label or decision.label,
            detail=detail,
        )

    # ---- the Model seam ---------------------------------------------------------------------
    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        """Route the request by its PII and stream the answer (placeholders restored)."""
        analysis = await asyncio.to_thread(self.policy.analyze, messages)
        decision = analysis.decision
        if decision.route == "local":
            self._record(decision)
            async for ev in relay(self.local.chat(messages, tools, settings=settings)):
                yield ev
            return
        self._record(decision)
        restorer = StreamRestorer(analysis.pseudonyms)
        shown = False
        stream = self.remote.chat(analysis.send, tools, settings=settings)
        try:
            async for ev in relay(stream):
                if isinstance(ev, TextDelta):
                    text = restorer.feed(ev.text)
                    if text:
                        shown = True
                        yield TextDelta(text)
                elif isinstance(ev, ToolCallEvent):
                    shown = True
                    c = ev.call
                    args = c.arguments if self.egress(c.name) else (
                        analysis.pseudonyms.restore_data(c.arguments))
                    yield ToolCallEvent(ToolCall(c.name, args, c.id))
                elif isinstance(ev, Finish):
                    tail = restorer.flush()
                    if tail:
                        yield TextDelta(tail)
                    yield ev
                else:
                    yield ev
            tail = restorer.flush()  # a stream that ended without its Finish
            if tail:
                yield TextDelta(tail)
        except (ModelError, ClusterError) as exc:
            if isinstance(exc, ModelOutputError) or shown or not self.fallback_local:
                raise
            fallback = dataclasses.replace(decision, route="local", redacted=0)
            self._record(fallback, "local_fallback", error=type(exc).__name__)
            async for ev in relay(self.local.chat(messages, tools, settings=settings)):
                yield ev

    async def aclose(self) -> None:
        """Close both models."""
        try:
            await self.remote.aclose()
        finally:
            if self.local is not self.remote:
                await self.local.aclose()


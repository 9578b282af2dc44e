"""Scanning what goes to the model and what tools return.

- :class:`OutputScanStage` is a gateway stage: every tool output (and error text) passes the
  scanner before it leaves the gateway, so a secret a tool printed never reaches the model,
  the memory, the client stream or the audit log. Policy ``redact`` masks; ``block``
  withholds the output.
- :class:`GuardedModel` wraps any ``llm.Model``: every message is scanned (redacted) right
  before ``chat`` sends it, whatever put it in the context (user text, RAG, memory, tools).
  The composition root (``bastion.app``) applies it; this module knows only the message
  dataclasses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bastion.messages import Message, TextDelta, ToolCall, ToolCallEvent
from bastion.security.gateway import CallRequest, Next, ToolResult
from bastion.security.redact import Redactor
from bastion.security.scanner import Policy


class OutputScanStage:
    """Scan tool outputs: redact secrets, or withhold the output (policy ``block``)."""

    span_name = "scan"
    span_after = True  # its work is on the way back: the span covers that part

    def __init__(self, redactor: Redactor, policy: Policy = "redact") -> None:
        self.redactor = redactor
        self.policy: Policy = policy

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Run the tool, then scan what it returned."""
        result = await nxt(req)
        scanner = self.redactor.scanner
        out = scanner.apply(result.text, self.policy)
        if out.findings:
            req.annotations["scan"] = {"rules": out.rules, "blocked": out.blocked,
                                       "policy": self.policy}
            result.text = out.text
            if out.blocked:
                result.ok = False
                result.decision = "denied"
                result.error = out.text
                result.data = None
            else:
                result.data = self.redactor.data(result.data)
        if result.error and result.error != result.text:
            result.error = scanner.apply(result.error, "redact").text
        return result


class GuardedModel:
    """A model whose every outgoing message is scanned for secrets first.

    With an ``audit`` log, every model request and response is recorded too (kinds
    ``model.request`` / ``model.response``; redacted like every audit record); each request
    carries ``provenance``: the model file's SHA-256, or the remote server URL and model id.
    """

    def __init__(self, inner: Any, redactor: Redactor, audit: Any = None,
                 session_id: str | None = None, provenance: dict[str, Any] | None = None
                 ) -> None:
        self.inner = inner
        self.provenance = provenance  # which weights answer (sha256, or server + model id)
        self.redactor = redactor
        self.audit = audit
        self.session_id = session_id

    @property
    def wrapped(self) -> Sequence[Any]:
        """Return the models this one delegates to."""
        return (self.inner,)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def guard(self, messages: Sequence[Message]) -> list[Message]:
        """Return ``messages`` with secrets masked (content and tool-call arguments)."""
        r = self.redactor
        out = []
        for m in messages:
            content = r.text(m.content) if m.content else m.content
            calls = [ToolCall(c.name, r.data(c.arguments), c.id) for c in m.tool_calls]
            out.append(dataclasses.replace(m, content=content, tool_calls=calls))
        return out

    def chat(self, messages: Sequence[Message], tools: Sequence[Any] = (), **kwargs: Any
             ) -> AsyncIterator[Any]:
        """Scan ``messages`` and delegate to the wrapped model."""
        guarded = self.guard(messages)
        stream = self.inner.chat(guarded, tools, **kwargs)
        if self.audit is None:
            return stream  # type: ignore[no-any-return]
        return self._audited(guarded, tools, stream)

    async def _audited(self, messages: list[Message], tools: Sequence[Any],
                       stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        last = messages[-1] if messages else None
        self.audit.record(
            "model.request", actor="agent", session_id=self.session_id,
            result=last.content if last else None,
            detail={"model": getattr(self.inner, "name", None), "messages": len(messages),
                    "last_role": last.role if last else None, "tools": len(tools),
                    "provenance": self.provenance})
        text: list[str] = []
        calls: list[str] = []
        async for ev in stream:
            if isinstance(ev, TextDelta):
                text.append(ev.text)
            elif isinstance(ev, ToolCallEvent):
                calls.append(ev.call.name)
            yield ev
        self.audit.record("model.response", actor="model", session_id=self.session_id,
                          result="".join(text), detail={"tool_calls": calls})

    async def aclose(self) -> None:
        """Close the wrapped model."""
        await self.inner.aclose()

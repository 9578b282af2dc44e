"""The one approval manager: a pending queue answered by the CLI prompt, the API or the web page.

The manager is the gateway's :class:`~bastion.security.approval.Approver`. Each request waits
in a queue until someone decides it or its timeout passes (a timeout is a deny). An
interactive *delegate* (the CLI prompt) is asked at the same time; whoever answers first
wins. Every request and decision is audited. An approval with ``scope="session"`` becomes a
rule that approves the same tool for the rest of that session (never for CRITICAL risk).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.security.approval import ApprovalDecision, ApprovalRequest, Approver
from bastion.security.recorder import AuditRecorder
from bastion.security.redact import Redactor
from bastion.tools.base import Risk

Scope = Literal["once", "session"]


_Subscriber = tuple[asyncio.AbstractEventLoop, "asyncio.Queue[dict[str, Any]]"]


@dataclass(slots=True)
class PendingApproval:
    """A request waiting for a human."""

    id: str
    request: ApprovalRequest
    created: float
    expires: float
    future: asyncio.Future[ApprovalDecision] = field(repr=False)
    loop: asyncio.AbstractEventLoop = field(repr=False)
    scope: Scope = "once"

    def to_dict(self, redactor: Redactor | None = None) -> dict[str, Any]:
        """Return what a client is shown: the exact arguments, held secrets masked."""
        r = self.request
        args = redactor.held_data(r.arguments) if redactor else r.arguments
        return {"id": self.id, "tool": r.tool, "arguments": args, "risk": r.risk.name,
                "reasons": list(r.reasons), "session_id": r.session_id, "call_id": r.call_id,
                "created": self.created, "expires": self.expires,
                "seconds_left": max(0.0, round(self.expires - time.time(), 1))}


@dataclass(slots=True, frozen=True)
class SessionRule:
    """"Allow this for the session": the same tool, same session, up to HIGH risk."""

    session_id: str | None
    tool: str
    by: str


class ApprovalManager:
    """Pending approvals, decisions, session rules and per-session thresholds."""

    def __init__(
        self,
        *,
        default_threshold: Risk = Risk.HIGH,
        audit: AuditRecorder | None = None,
        redactor: Redactor | None = None,
        delegate: Approver | None = None,
    ) -> None:
        self.default_threshold = default_threshold
        self.audit = audit
        self.redactor = redactor
        self.delegate = delegate
        self._lock = threading.Lock()
        self._pending: dict[str, PendingApproval] = {}
        self._rules: list[SessionRule] = []
        self._thresholds: dict[str | None, Risk] = {}
        self._subscribers: list[_Subscriber] = []

    # ---- thresholds and rules ----------------------------------------------------------------
    def threshold_for(self, session_id: str | None) -> Risk:
        """Return the approval threshold of ``session_id``."""
        return self._thresholds.get(session_id, self.default_threshold)

    def session_threshold(self, session_id: str | None) -> Risk | None:
        """Return the threshold set for ``session_id``, or None (the gateway's default applies)."""
        return self._thresholds.get(session_id)

    def set_threshold(self, session_id: str | None, risk: Risk) -> None:
        """Set the approval threshold of one session."""
        self._thresholds[session_id] = risk
        self._audit("approval.threshold", session_id=session_id, risk=risk.name.lower(),
                    decision="set")

    def session_rules(self, session_id: str | None = None) -> list[SessionRule]:
        """Return the "allow for this session" rules (of one session, or all)."""
        with self._lock:
            return [r for r in self._rules if session_id is None or r.session_id == session_id]

    def _rule_for(self, req: ApprovalRequest) -> SessionRule | None:
        if req.risk >= Risk.CRITICAL or not req.allow_session_rule:
            return None
        with self._lock:
            for rule in self._rules:
                if rule.session_id == req.session_id and rule.tool == req.tool:
                    return rule
        return None

    # ---- the Approver seam -------------------------------------------------------------------
    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        """Queue ``request`` and wait for a decision; a timeout is a deny."""
        rule = self._rule_for(request)
        if rule is not None:
            decision = ApprovalDecision(True, "session-rule",
                                        f"allowed for this session by {rule.by}")
            self._audit_decision(request, decision, "session", None)
            return decision
        loop = asyncio.get_running_loop()
        now = time.time()
        pending = PendingApproval(uuid.uuid4().hex[:12], request, now, now + timeout_s,
                                  loop.create_future(), loop)
        with self._lock:
            self._pending[pending.id] = pending
        self._audit("approval.requested", session_id=request.session_id, tool=request.tool,
                    risk=request.risk.name.lower(), arguments=request.arguments,
                    detail={"approval_id": pending.id, "reasons": request.reasons,
                            "timeout_s": timeout_s, "call_id": request.call_id})
        self._publish({"type": "approval_pending", **pending.to_dict(self.redactor)})
        helper: asyncio.Task[None] | None = None
        if self.delegate is not None:
            helper = asyncio.ensure_future(self._ask_delegate(pending, timeout_s))
        try:
            decision = await asyncio.wait_for(asyncio.shield(pending.future), timeout_s)
        except TimeoutError:
            decision = ApprovalDecision(False, "timeout",
                                        f"no decision within {timeout_s:g}s (timeout = deny)")
            self._set(pending, decision)
        finally:
            with self._lock:
                self._pending.pop(pending.id, None)
            if helper is not None and not helper.done():
                helper.cancel()
                with contextlib.suppress(BaseException):
                    await helper
        self._audit_decision(request, decision, pending.scope, pending.id)
        self._publish({"type": "approval_resolved", "id": pending.id, "approved": decision.approved,
                       "by": decision.by, "reason": decision.reason,
                       "session_id": request.session_id})
        return decision

    def park(self, request: ApprovalRequest, *, approval_id: str, expires: float,
             on_decision: Callable[[str, ApprovalDecision], None],
             announce: bool = True) -> PendingApproval:
        """List ``request`` as pending without anyone waiting on it (a parked unattended run).

        It is shown and decided like any other (``GET/POST /v1/approvals``, the events stream);
        the decision is audited and handed to ``on_decision(approval_id, decision)`` on this
        event loop. ``announce=False`` re-lists one already audited as requested (after a
        restart). Nothing here denies at ``expires``: the caller owns the deadline and calls
        :meth:`resolve` then.
        """
        loop = asyncio.get_running_loop()
        pending = PendingApproval(approval_id, request, time.time(), expires,
                                  loop.create_future(), loop)
        with self._lock:
            self._pending[approval_id] = pending
        if announce:
            self._audit("approval.requested", session_id=request.session_id, tool=request.tool,
                        risk=request.risk.name.lower(), arguments=request.arguments,
                        detail={"approval_id": approval_id, "reasons": request.reasons,
                                "parked": True, "expires": expires,
                                "call_id": request.call_id})

        def done(fut: asyncio.Future[ApprovalDecision]) -> None:
            with self._lock:
                self._pending.pop(approval_id, None)
            if fut.cancelled():
                return
            decision = fut.result()
            self._audit_decision(request, decision, pending.scope, approval_id)
            self._publish({"type": "approval_resolved", "id": approval_id,
                           "approved": decision.approved, "by": decision.by,
                           "reason": decision.reason, "session_id": request.session_id})
            on_decision(approval_id, decision)

        pending.future.add_done_callback(done)
        self._publish({"type": "approval_pending", **pending.to_dict(self.redactor)})
        return pending

    def unpark(self, approval_id: str) -> None:
        """Drop a parked request without a decision (its run ended another way)."""
        with self._lock:
            pending = self._pending.pop(approval_id, None)
        if pending is not None and not pending.future.done():
            pending.future.cancel()

    async def _ask_delegate(self, pending: PendingApproval, timeout_s: float) -> None:
        assert self.delegate is not None
        decision = await self.delegate.decide(pending.request, timeout_s=timeout_s)
        scope: Scope = "session" if getattr(decision, "by", "").endswith(":session") else "once"
        self.resolve(pending.id, decision.approved, by=decision.by.removesuffix(":session"),
                     reason=decision.reason, scope=scope)

    # ---- answering -------------------------------------------------------------------------
    def pending(self, session_id: str | None = None) -> list[PendingApproval]:
        """Return the requests waiting now (oldest first)."""
        with self._lock:
            items = list(self._pending.values())
        mine = [p for p in items if session_id is None or p.request.session_id == session_id]
        return sorted(mine, key=lambda p: p.created)

    def get(self, approval_id: str) -> PendingApproval | None:
        """Return one pending request."""
        with self._lock:
            return self._pending.get(approval_id)

    def resolve(self, approval_id: str, approved: bool, *, by: str, reason: str | None = None,
                scope: Scope = "once") -> bool:
        """Decide a pending request (from any thread); return False if it is no longer pending."""
        pending = self.get(approval_id)
        if pending is None or pending.future.done():
            return False
        if approved and scope == "session":
            if pending.request.risk >= Risk.CRITICAL or not pending.request.allow_session_rule:
                scope = "once"  # critical and tainted-session calls are asked every time
            else:
                with self._lock:
                    self._rules.append(SessionRule(pending.request.session_id,
                                                   pending.request.tool, by))
        decision = ApprovalDecision(approved, by, reason)
        pending.loop.call_soon_threadsafe(self._set, pending, decision, scope)
        return True

    @staticmethod
    def _set(pending: PendingApproval, decision: ApprovalDecision, scope: Scope = "once") -> None:
        if not pending.future.done():
            pending.scope = scope
            pending.future.set_result(decision)

    # ---- streaming -------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Yield ``approval_pending`` / ``approval_resolved`` events as they happen."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        entry = (loop, queue)
        with self._lock:
            self._subscribers.append(entry)
        try:
            for p in self.pending():
                yield {"type": "approval_pending", **p.to_dict(self.redactor)}
            while True:
                yield await queue.get()
        finally:
            with self._lock:
                self._subscribers.remove(entry)

    def _publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subscribers)
        for loop, queue in subs:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, event)

    # ---- audit -----------------------------------------------------------------------------
    def _audit(self, kind: str, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.record(kind, actor=fields.pop("actor", "hitl"), **fields)

    def _audit_decision(self, req: ApprovalRequest, d: ApprovalDecision, scope: str,
                        approval_id: str | None) -> None:
        self._audit("approval.decision", actor=d.by, session_id=req.session_id, tool=req.tool,
                    decision="approved" if d.approved else "denied",
                    risk=req.risk.name.lower(), arguments=req.arguments,
                    detail={"approval_id": approval_id, "by": d.by, "reason": d.reason,
                            "scope": scope, "call_id": req.call_id})

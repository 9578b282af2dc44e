"""Human approval: the ``Approver`` seam and the always-available non-interactive one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.tools.base import Risk


@dataclass(slots=True)
class ApprovalRequest:
    """What a human is asked to approve."""

    tool: str
    arguments: dict[str, Any]
    risk: Risk
    reasons: list[str] = field(default_factory=list)
    session_id: str | None = None
    call_id: str | None = None
    # False for calls of a tainted session: a human decides each one, no session rule
    allow_session_rule: bool = True


@dataclass(slots=True, frozen=True)
class CallRef:
    """The tool call a piece of work belongs to (what an approval names as its origin)."""

    tool: str
    call_id: str | None = None
    session_id: str | None = None


#: The tool call the current task runs for (the gateway sets it around a tool's run).
tool_call: ContextVar[CallRef | None] = ContextVar("bastion_tool_call", default=None)


def current_call() -> CallRef | None:
    """Return the tool call this task runs for (``None``: none)."""
    return tool_call.get()


@dataclass(slots=True, frozen=True)
class ApprovalDecision:
    """A human's (or a default's) answer."""

    approved: bool
    by: str
    reason: str | None = None


class Approver(Protocol):
    """Decides approval requests; must return a deny on timeout."""

    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        """Return the decision for ``request``."""
        ...


class DenyApprover:
    """The non-interactive default: nothing risky runs without a human."""

    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        """Deny, saying why."""
        return ApprovalDecision(
            False, "default", "no one is available to approve (non-interactive)"
        )


class AllowApprover:
    """Approves everything; for explicit ``--yes`` runs and tests only."""

    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        """Approve."""
        return ApprovalDecision(True, "auto", "auto-approved (--yes)")


class ApprovalParked(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Control-flow signal: the approver parked the call instead of waiting for a human.

    Raised by an unattended run's approver; it leaves the gateway unrecorded (the call did not
    run) and the agent stops the turn so that its state can be saved and resumed later.
    """

    def __init__(self, request: ApprovalRequest) -> None:
        super().__init__(f"{request.tool} is waiting for approval")
        self.request = request


_override: ContextVar[Approver | None] = ContextVar("bastion_approver", default=None)


def approver_override() -> Approver | None:
    """Return the approver set for this task with :func:`approving_with` (``None``: none)."""
    return _override.get()


@contextlib.contextmanager
def approving_with(approver: Approver | None) -> Iterator[None]:
    """Decide the approvals of the calls made in the body with ``approver`` (an unattended run)."""
    token = _override.set(approver)
    try:
        yield
    finally:
        _override.reset(token)

"""Events an agent turn streams to its client (CLI, API, voice)."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.messages import TextDelta, ToolCall, Usage
from bastion.security.approval import ApprovalRequest
from bastion.security.gateway import ToolResult


@dataclass(slots=True, frozen=True)
class ToolStarted:
    """The agent is about to run a tool call through the gateway."""

    call: ToolCall
    step: int


@dataclass(slots=True, frozen=True)
class ToolFinished:
    """A tool call came back (ok, error or denied)."""

    result: ToolResult
    step: int


@dataclass(slots=True, frozen=True)
class TurnDone:
    """The turn ended with ``answer``."""

    answer: str
    steps: int
    prompt_tokens: int
    completion_tokens: int
    forced_final: bool = False


@dataclass(slots=True, frozen=True)
class TurnError:
    """The turn could not complete; ``message`` is one clear line."""

    message: str


@dataclass(slots=True, frozen=True)
class TurnParked:
    """The turn stopped at calls waiting for approval (an unattended run's approver parked them).

    The turn's state went to the ``checkpoint`` callback just before; ``Agent.run(resume=...)``
    continues it once every request is decided.
    """

    requests: tuple[ApprovalRequest, ...]
    step: int


AgentEvent = TextDelta | ToolStarted | ToolFinished | Usage | TurnDone | TurnError | TurnParked

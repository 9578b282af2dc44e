"""The payloads of the API's server-sent events: one model per event name.

Each SSE route documents its events' ``data`` with ``contentSchema`` (a ``oneOf`` of these
models, see :func:`bastion.server.contract.sse`), and :mod:`bastion.client` parses the streams
into them (:data:`TurnEvent`). Like :mod:`bastion.server.responses`, the models allow extra
fields, so a newer server may add one without breaking an older client. Pydantic only, no app.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from bastion.server.responses import PendingApproval


class Event(BaseModel):
    """Base of every event payload: named fields typed, extra fields kept."""

    model_config = ConfigDict(extra="allow")


# ---- a session turn: POST /v1/sessions/{id}/messages (and the web UI's WebSocket) ---------
class SessionEvent(Event):
    """``session``: the turn runs in this session (the first event)."""

    type: Literal["session"]
    session_id: str


class TextEvent(Event):
    """``text``: a piece of the answer (secrets already redacted)."""

    type: Literal["text"]
    text: str


class ToolStartedEvent(Event):
    """``tool_started``: the agent asked for a tool; the gateway decides next."""

    type: Literal["tool_started"]
    step: int
    call_id: str
    name: str
    arguments: Any = Field(description="exactly what runs; held secrets masked")
    risk: str | None = Field(None, description="the tool's declared risk (session streams)")
    sandbox: str | None = Field(None, description="where it runs: a sandbox backend, "
                                                  "in-process or unavailable")


class ToolFinishedEvent(Event):
    """``tool_finished``: the gateway's decision and the tool's result (clipped, redacted)."""

    type: Literal["tool_finished"]
    step: int
    call_id: str
    name: str
    ok: bool
    decision: str = Field(description="allowed, denied or error")
    duration_ms: float
    text: str
    error: str | None


class UsageEvent(Event):
    """``usage``: the tokens of one model call."""

    type: Literal["usage"]
    prompt_tokens: int
    completion_tokens: int


class ApprovalPendingEvent(PendingApproval):
    """``approval_pending``: a tool call waits for a human (decide with POST /v1/approvals)."""

    type: Literal["approval_pending"]


class ApprovalResolvedEvent(Event):
    """``approval_resolved``: a pending call was approved or denied (or timed out)."""

    type: Literal["approval_resolved"]
    id: str
    approved: bool
    by: str
    reason: str | None
    session_id: str | None


class DoneEvent(Event):
    """``done``: the turn's answer (the last event of a turn that completed)."""

    type: Literal["done"]
    answer: str
    steps: int
    prompt_tokens: int
    completion_tokens: int
    forced_final: bool


class ErrorEvent(Event):
    """``error``: the turn (or stream) could not complete; the message says why."""

    type: Literal["error"]
    message: str


TurnEvent = Annotated[
    SessionEvent | TextEvent | ToolStartedEvent | ToolFinishedEvent | UsageEvent
    | ApprovalPendingEvent | ApprovalResolvedEvent | DoneEvent | ErrorEvent,
    Field(discriminator="type"),
]
"""Any event of a session turn's stream, told apart by ``type`` (= the SSE event name)."""

TURN_EVENTS: dict[str, type[BaseModel]] = {
    "session": SessionEvent, "text": TextEvent, "tool_started": ToolStartedEvent,
    "tool_finished": ToolFinishedEvent, "usage": UsageEvent,
    "approval_pending": ApprovalPendingEvent, "approval_resolved": ApprovalResolvedEvent,
    "done": DoneEvent, "error": ErrorEvent}
"""The events of a session turn's stream and their payloads (built by
:func:`bastion.server.events.event_payload` and ``_turns``)."""

_TURN_EVENT: TypeAdapter[TurnEvent] = TypeAdapter(TurnEvent)


def parse_turn_event(data: str | bytes) -> TurnEvent:
    """Parse one turn event's ``data`` (JSON) into its model.

    Raises:
        pydantic.ValidationError: not an event of a turn's stream.

    """
    return _TURN_EVENT.validate_json(data)


# ---- GET /v1/approvals/events ---------------------------------------------------------------
class ReadyEvent(Event):
    """``ready``: subscribed; every later approval event reaches this stream."""

    type: Literal["ready"]


APPROVAL_EVENTS: dict[str, type[BaseModel]] = {
    "ready": ReadyEvent, "approval_pending": ApprovalPendingEvent,
    "approval_resolved": ApprovalResolvedEvent}
"""The approvals stream's events and their payloads."""


# ---- POST /v1/models/pull -------------------------------------------------------------------
class PullProgress(Event):
    """``progress``: bytes of one file so far."""

    file: str
    done: int
    total: int | None
    rate: int = Field(description="bytes per second")
    eta_s: float | None


class PulledFile(Event):
    """One weights file of a pulled model."""

    name: str
    size: int
    sha256: str
    mtime_ns: int


class PullDone(Event):
    """``done``: the installed model's manifest."""

    name: str
    source: str
    repo: str | None
    revision: str | None
    files: list[PulledFile]
    license: str | None
    chat_template: bool
    tool_format: str | None
    created: float
    size: int
    sha256: str


class PullFailed(Event):
    """``error``: the pull failed; nothing half-written is kept."""

    message: str
    fix: str | None


PULL_EVENTS: dict[str, type[BaseModel]] = {
    "progress": PullProgress, "done": PullDone, "error": PullFailed}
"""A model pull's events and their payloads."""

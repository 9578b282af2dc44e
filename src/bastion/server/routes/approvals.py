"""Approval routes: list pending tool calls, approve/deny them with a reason, a small web page.

While the API serves, pending approvals wait here (and on the web page ``GET /approvals``)
until someone decides or the timeout denies them. The page itself carries no data and is
public; it asks for the API token and calls the JSON routes with it.

- ``GET /v1/approvals``: pending requests (arguments redacted) and "allow for the session" rules.
- ``POST /v1/approvals/{id}``: ``{"approve": bool, "reason": str, "scope": "once"|"session"}``.
- ``PUT /v1/approvals/thresholds/{session_id}``: ``{"risk": "low"|...}`` for one session.
- ``GET /v1/approvals/events``: SSE of ``approval_pending`` / ``approval_resolved``.

Session streams (``POST /v1/sessions/{id}/messages``) carry the same two events for their own
session, so a client sees that the agent is waiting (see :func:`with_approvals`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Path
from fastapi.responses import HTMLResponse
from pydantic import ConfigDict, Field
from starlette.responses import Response

from bastion.app import App
from bastion.security.hitl.manager import ApprovalManager
from bastion.security.identity import current
from bastion.server._approval_stream import with_approvals as with_approvals
from bastion.server._openai import SESSION_ID_PATTERN
from bastion.server._turns import record_keys, session_names
from bastion.server.contract import ApiModel, errors, link, links, sse
from bastion.server.deps import BastionApp, may_approve
from bastion.server.errors import ApiError
from bastion.server.headers import static_page
from bastion.server.responses import (
    ApprovalDecided,
    PendingApproval,
    PendingList,
    SessionRule,
    ThresholdSet,
)
from bastion.server.sse import sse_event, sse_response
from bastion.server.stream_events import APPROVAL_EVENTS
from bastion.tools.base import Risk

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="session id")]


@asynccontextmanager
async def _lifespan(api: FastAPI) -> AsyncIterator[None]:
    # The API has no terminal: pending approvals wait for the API instead of the default
    # non-interactive deny (a timeout still denies).
    app = getattr(api.state, "bastion", None)
    if app is not None and app.hitl is not None and app.config.hitl.api_approvals:
        from bastion.security.approval import DenyApprover

        if isinstance(app.hitl.delegate, DenyApprover):
            app.set_approver(None)
    yield


router = APIRouter(prefix="/v1/approvals", tags=["approvals"], lifespan=_lifespan)
public_router = APIRouter(tags=["approvals"])


class Decision(ApiModel):
    """``POST /v1/approvals/{id}``."""

    model_config = ConfigDict(extra="forbid")
    approve: bool
    reason: str | None = Field(default=None, max_length=2000)
    scope: Literal["once", "session"] = "once"


class Threshold(ApiModel):
    """``PUT /v1/approvals/thresholds/{session_id}``."""

    model_config = ConfigDict(extra="forbid")
    risk: Literal["low", "medium", "high", "critical"]


def _manager(app: App) -> ApprovalManager:
    if app.hitl is None:
        raise ApiError(409, "approvals are not available in this app", code="no_approvals",
                       fix="serve an app assembled by build_app() (bastion serve) or give "
                       "App an ApprovalManager")
    return app.hitl


@router.get("", summary="Pending approvals and session rules", responses=errors(409),
            operation_id="list_approvals", openapi_extra=links(200, {
                name: link(name, approval_id="$response.body#/pending/0/id")
                for name in ("get_approval", "decide_approval")}))
async def list_pending(app: BastionApp, session_id: str | None = None
                       ) -> PendingList:
    """Return the requests waiting for a decision (oldest first)."""
    m = _manager(app)
    keys = record_keys(app, session_id) if session_id else ()  # never () for a session
    pending = [p for p in m.pending() if (not keys or p.request.session_id in keys)
               and may_approve(app, p.request.session_id)]
    rules = [r for r in m.session_rules() if (not keys or r.session_id in keys)
             and may_approve(app, r.session_id)]
    names = session_names(app, [*(p.request.session_id for p in pending),
                                *(r.session_id for r in rules)])
    return PendingList(  # records carry a session's stored id; session_name is its name now
        pending=[PendingApproval.model_validate(
            {**p.to_dict(app.redactor), "session_name": names.get(p.request.session_id or "")})
            for p in pending],
        session_rules=[SessionRule(session_id=r.session_id, session_name=names.get(
            r.session_id or ""), tool=r.tool, by=r.by) for r in rules],
        default_threshold=app.approvals.threshold.name,
    )


@router.get("/events", summary="Approval events (SSE)", response_model=None,
            responses=sse("SSE: ready (subscribed), then approval_pending (those waiting now "
                          "first) and "
                          "approval_resolved events until the client disconnects",
                          events=APPROVAL_EVENTS)
            | errors(409))
async def approval_events(app: BastionApp) -> Response:
    """Stream ``ready`` (subscribed), then ``approval_pending`` and ``approval_resolved``."""
    m = _manager(app)

    async def stream() -> AsyncIterator[str]:
        events = m.events()
        nxt = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)  # the subscription is registered before "ready" is sent
        try:
            yield sse_event("ready", {"type": "ready"})
            while True:
                ev = await nxt
                if may_approve(app, ev.get("session_id")):  # others' approvals are not shown
                    yield sse_event(ev["type"], ev)
                nxt = asyncio.ensure_future(anext(events))
        finally:
            nxt.cancel()
            with contextlib.suppress(BaseException):
                await nxt
            with contextlib.suppress(BaseException):
                await events.aclose()  # type: ignore[attr-defined]

    return sse_response(stream())


@router.get("/{approval_id}", summary="One pending approval", responses=errors(404, 409),
            operation_id="get_approval")
async def get_pending(approval_id: str, app: BastionApp) -> PendingApproval:
    """Return one pending request."""
    p = _manager(app).get(approval_id)
    if p is None or not may_approve(app, p.request.session_id):
        raise ApiError(404, f"no pending approval {approval_id}", code="approval_not_found",
                       fix="list them with GET /v1/approvals; it may have timed out")
    return PendingApproval.model_validate(p.to_dict(app.redactor))


@router.post("/{approval_id}", summary="Approve or deny a pending tool call",
             responses=errors(404, 409), operation_id="decide_approval")
async def decide(approval_id: str, body: Decision, app: BastionApp
                 ) -> ApprovalDecided:
    """Decide a pending request (its session's owner or an approver); audited with who."""
    m = _manager(app)
    p = m.get(approval_id)
    who = current()
    ok = p is not None and may_approve(app, p.request.session_id) and m.resolve(
        approval_id, body.approve, by="api" if who is None else f"api:{who.user}",
        reason=body.reason, scope=body.scope)
    if not ok:
        raise ApiError(404, f"no pending approval {approval_id}", code="approval_not_found",
                       fix="it was already decided or timed out (timeout = deny)")
    return ApprovalDecided(id=approval_id, approved=body.approve, scope=body.scope)


@router.put("/thresholds/{session_id}", summary="Set a session's approval threshold",
            responses=errors(409))
async def set_threshold(session_id: SessionId, body: Threshold, app: BastionApp
                        ) -> ThresholdSet:
    """Ask for approval of calls at or above ``risk`` in this session (its name or id)."""
    m = _manager(app)
    m.set_threshold(await app.memory.open_session(session_id), Risk.parse(body.risk))
    return ThresholdSet(session_id=session_id, threshold=body.risk)


@public_router.get("/approvals", response_class=HTMLResponse, include_in_schema=False)
async def approvals_page() -> HTMLResponse:
    """Serve the pending-approvals page (static; data comes from the token-protected routes)."""
    return static_page("approvals.html")


"""Session-aware chat: create a session, send it messages (SSE of agent events), read it back.

``POST /v1/sessions/{id}/messages`` streams named SSE events (``event: NAME`` +
``data: {...}``): ``session``, then ``text``, ``tool_started``, ``tool_finished``, ``usage``
as they happen (and ``approval_pending`` / ``approval_resolved`` while a tool call waits for
a human, see ``routes/approvals.py``), and finally ``done`` or ``error`` (payloads in
:mod:`bastion.server.events`).
Sessions live in ``app.memory`` (the memory feature persists them and adds listing and
export under ``/v1/sessions`` in its own route module).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field

from bastion.agent.loop import Agent
from bastion.app import App
from bastion.errors import BastionError
from bastion.memory.persistent import PersistentMemory
from bastion.messages import ChatSettings, Message
from bastion.security.identity import owner_name
from bastion.server._openai import SESSION_ID_PATTERN
from bastion.server._turns import (
    busy_error,
    busy_sessions,
    collect_turn,
    created_sessions,
    make_agent,
    redacted_events,
)
from bastion.server.contract import ApiModel, errors, link, links, sse
from bastion.server.deps import BastionApp
from bastion.server.errors import ApiError, bastion_error_payload, error_body
from bastion.server.responses import (
    SessionCreated,
    SessionMessage,
    SessionPage,
    TurnAnswer,
    Usage,
)
from bastion.server.sse import sse_event, sse_response
from bastion.server.stream_events import TURN_EVENTS

log = logging.getLogger("bastion.server")
router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

MAX_OFFSET = 2**62  # SQLite integers are 64-bit

CREATED_ID = "$response.body#/id"
SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="session id")]


class _Body(ApiModel):
    model_config = ConfigDict(extra="forbid")


class NewSession(_Body):
    """``POST /v1/sessions``: optionally choose the id."""

    id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)


class NewMessage(_Body):
    """``POST /v1/sessions/{id}/messages``: one user turn."""

    content: str = Field(min_length=1, description="the user's message")
    stream: bool = Field(default=True, description="SSE of agent events, or one JSON answer")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)


def _created(request: Request) -> set[tuple[str, str]]:
    """Return the (owner, id) pairs made by POST /v1/sessions in this process."""
    return created_sessions(request)


async def _stored(app: App, sid: str) -> bool:
    mem = app.memory
    if isinstance(mem, PersistentMemory):
        return await asyncio.to_thread(mem.store.session_id, sid) is not None
    return bool(await mem.history(sid))


def _message_json(app: App, m: Message) -> SessionMessage:
    out: dict[str, Any] = {"role": m.role, "content": app.redactor.text(m.content)}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": app.redactor.held_data(c.arguments)}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    if m.step:
        out["step"] = app.redactor.data(m.step)
    return SessionMessage.model_validate(out)


@router.post("", status_code=201, summary="Create a session", responses=errors(409),
             operation_id="create_session", openapi_extra=links(201, {
                 name: link(name, session_id=CREATED_ID)
                 for name in ("get_session", "post_message", "list_undoable", "rename_session",
                              "export_session", "delete_session")}))
async def create_session(
    request: Request, app: BastionApp, body: NewSession | None = None
) -> SessionCreated:
    """Create a session (a fresh id unless one is given); 409 if the caller already has it.

    Only the caller's own sessions count: a name another user has is free to take.
    """
    sid = body.id if body and body.id else Agent.new_session_id()
    created = _created(request)
    if (owner_name(), sid) in created or await _stored(app, sid):
        raise ApiError(409, f"session {sid} already exists", code="session_exists",
                       fix="choose another id, or omit it for a fresh one")
    created.add((owner_name(), sid))
    if isinstance(app.memory, PersistentMemory):  # listed, renamed and deleted like any other
        await app.memory.open_session(sid)
    return SessionCreated(id=sid, created=int(time.time()))


@router.get("/{session_id}", summary="Read a session's messages (the whole transcript, paged)",
            responses=errors(404), operation_id="get_session")
async def get_session(
    request: Request,
    app: BastionApp,
    session_id: SessionId,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET,
                                 description="first message to return (0 = oldest)")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="messages per page")] = 200,
) -> SessionPage:
    """Return one page of the session's stored messages (secrets redacted); 404 if never used.

    This is the whole stored transcript, not the model's context window: ``total`` counts every
    message, and ``offset``/``limit`` page through it oldest first.
    """
    total, messages = await app.memory.transcript(session_id, offset, limit)
    busy = session_id in busy_sessions(request)
    if (not total and not busy and (owner_name(), session_id) not in _created(request)
            and not await _stored(app, session_id)):
        raise ApiError(404, f"no session {session_id}", code="session_not_found",
                       fix="create one with POST /v1/sessions")
    return SessionPage(id=session_id, busy=busy, total=total, offset=offset,
                       messages=[_message_json(app, m) for m in messages])


@router.post(
    "/{session_id}/messages",
    summary="Send a message; the agent answers (SSE of agent events, or JSON)",
    response_model=None,
    responses=sse("SSE of agent events (session, text, tool_started, tool_finished, usage, "
                  "approval_pending/approval_resolved, then done or error); with stream: false "
                  "one JSON object (answer, steps, usage)", events=TURN_EVENTS,
                  json=TurnAnswer) | errors(409, 502),
    operation_id="post_message",
    openapi_extra=links(200, {"get_session": link("get_session",
                                                  session_id="$request.path.session_id")}),
)
async def post_message(
    request: Request, body: NewMessage, app: BastionApp, session_id: SessionId
) -> Response:
    """Run one agent turn in the caller's session (created on first use); 409 while busy.

    Another user's name or id is, here, a new session of the caller's.
    """
    busy = busy_sessions(request)
    _created(request).add((owner_name(), session_id))
    cfg = app.config.model
    settings = ChatSettings(
        temperature=cfg.temperature if body.temperature is None else body.temperature,
        max_tokens=body.max_tokens or cfg.max_tokens,
    )
    if session_id in busy:
        raise busy_error(session_id)
    if not body.stream:
        if not busy.claim(session_id):
            raise busy_error(session_id)
        try:
            agent = await make_agent(app, session_id, settings=settings)
            s = await collect_turn(app, agent, body.content, session_id)
        finally:
            busy.release(session_id)
        return JSONResponse(TurnAnswer(
            session_id=session_id, answer=s.answer, steps=s.steps, forced_final=s.forced_final,
            tool_steps=s.tool_steps, usage=Usage(prompt_tokens=s.prompt_tokens,
                                                 completion_tokens=s.completion_tokens),
        ).model_dump(mode="json"))

    async def stream() -> AsyncIterator[str]:
        # Claimed here, not before the response: a generator that never starts (client gone)
        # would otherwise leave the session busy for good.
        if not busy.claim(session_id):
            yield sse_event("error", {"type": "error", "message": busy_error(session_id).message})
            return
        try:
            yield sse_event("session", {"type": "session", "session_id": session_id})
            agent = await make_agent(app, session_id, settings=settings)
            async for name, payload in redacted_events(app, agent, body.content, session_id):
                yield sse_event(name, payload)
        except BastionError as exc:
            err = bastion_error_payload(request, exc)["error"]
            yield sse_event("error", {"type": "error", "message": err["message"]})
        except Exception as exc:  # never a traceback to the client
            log.error("session stream failed: %s",
                      app.redactor.text(f"{type(exc).__name__}: {exc}"))
            msg = error_body(500, "internal error while streaming the answer")["error"]["message"]
            yield sse_event("error", {"type": "error", "message": msg})
        finally:
            busy.release(session_id)

    return sse_response(stream(), headers={"X-Bastion-Session": session_id})

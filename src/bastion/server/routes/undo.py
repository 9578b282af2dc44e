"""Undo a session's workspace changes: ``GET|POST /v1/sessions/{id}/undo``.

``GET`` lists the session's calls that can still be undone (newest first) with what each
added, modified or deleted; ``POST`` restores the paths the last ``n`` of them changed to
their state before those calls (``dry_run`` only reports). Undo is refused while the session
has a turn running, and every undo is audited.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import ConfigDict, Field

from bastion.app import App
from bastion.memory.store import NO_SESSION
from bastion.security.undo import UndoStore
from bastion.security.undo.store import nothing_to_undo
from bastion.server._openai import SESSION_ID_PATTERN
from bastion.server._turns import busy_error, busy_sessions, record_keys
from bastion.server.contract import ApiModel, errors, feature_off
from bastion.server.deps import BastionApp
from bastion.server.responses import UndoableCall, UndoableCalls, UndoReport

router = APIRouter(prefix="/v1/sessions", tags=["undo"])

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="session id")]


class UndoBody(ApiModel):
    """``POST /v1/sessions/{id}/undo``: how many calls, and whether only to report."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1, ge=1, le=1000, description="calls to undo, newest first")
    dry_run: bool = Field(default=False, description="report what would be restored only")


def _store(app: App) -> UndoStore:
    if app.undo is None:
        raise feature_off("undo", "undo.enabled: true")
    return app.undo


def _key(app: App, store: UndoStore, session_id: str) -> str:
    """Return the key the session's undo records carry: its id (older ones: a name).

    A session the caller does not have (another user's included) gets a key no record
    carries: the answer a session without undoable calls gets (no existence oracle).
    """
    keys = record_keys(app, session_id)
    return next((k for k in keys if store.calls(k, 1)), keys[0])


@router.get("/{session_id}/undo", summary="List the undoable calls of a session",
            responses=errors(409), operation_id="list_undoable")
async def list_undoable(
    session_id: SessionId, app: BastionApp,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> UndoableCalls:
    """List the session's undoable calls with the diff of each."""
    store = _store(app)
    key = await asyncio.to_thread(_key, app, store, session_id)
    calls = await asyncio.to_thread(store.calls, key, limit)
    return UndoableCalls(session_id=session_id,
                         calls=[UndoableCall.model_validate(c.to_dict()) for c in calls])


@router.post("/{session_id}/undo", summary="Undo the last calls of a session",
             responses=errors(404, 409), operation_id="undo")
async def undo(
    session_id: SessionId, app: BastionApp, request: Request, body: UndoBody | None = None,
) -> UndoReport:
    """Restore the workspace paths the last ``n`` calls of the session changed."""
    body = body or UndoBody()
    if record_keys(app, session_id) == (NO_SESSION,):  # as a session with nothing to undo
        raise nothing_to_undo(session_id)
    store = _store(app)
    busy = busy_sessions(request)
    if not busy.claim(session_id):
        raise busy_error(session_id)
    try:
        key = await asyncio.to_thread(_key, app, store, session_id)
        report = await asyncio.to_thread(store.undo, key, body.n, dry_run=body.dry_run,
                                         audit=app.audit, actor="api")
    finally:
        busy.release(session_id)
    return UndoReport.model_validate(report.to_dict())

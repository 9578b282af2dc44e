"""Audit routes: query, count, export and verify the tamper-evident audit log.

- ``GET /v1/audit/events``: filters ``kind``, ``session_id``, ``tool``, ``decision``, ``actor``,
  ``since``/``until`` (Unix seconds, an ISO date or an age like ``7d``), ``limit``; newest
  first.
- ``GET /v1/audit/stats``; ``GET /v1/audit/verify`` (names the first bad record);
  ``GET /v1/audit/export?format=jsonl|csv`` (oldest first, with chain hashes).
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from bastion.security.audit_csv import write_csv
from bastion.server._turns import record_keys, session_names
from bastion.server.contract import TIME_SCHEMA, errors, media
from bastion.server.deps import BastionApp
from bastion.server.responses import AuditEvent, AuditEvents, AuditStats, AuditVerify
from bastion.timespec import parse_time

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Time = Annotated[str | None, Query(json_schema_extra=TIME_SCHEMA)]


@router.get("/events", summary="Audit records, newest first", responses=errors(400))
async def events(
    app: BastionApp,
    kind: str | None = None,
    session_id: str | None = Query(default=None, description="a session's id or name"),
    tool: str | None = None,
    decision: str | None = None, actor: str | None = None, since: Time = None,
    until: Time = None, limit: int = Query(default=100, ge=1, le=10_000),
    model: str | None = Query(default=None, description="model requests answered by this "
                              "model: sha256 (8+ hex digits), server URL or model id"),
    user: str | None = Query(default=None, description="records of this user's API requests"),
) -> AuditEvents:
    """Return matching records (already redacted when they were written)."""
    keys = record_keys(app, session_id, every_owner=True) if session_id else None
    rows = app.audit.events(limit=limit, kind=kind, session_id=keys, tool=tool,
                            decision=decision, actor=actor, since=parse_time(since),
                            until=parse_time(until), model=model, user=user)
    names = session_names(app, (e.session_id for e in rows))
    return AuditEvents(events=[
        AuditEvent.model_validate({**e.to_dict(), "session_name": names.get(e.session_id or "")})
        for e in rows])


@router.get("/stats", summary="Counts by kind, decision and tool")
async def stats(app: BastionApp) -> AuditStats:
    """Return counts and the time range."""
    return AuditStats.model_validate(app.audit.stats())


@router.get("/verify", summary="Verify the hash chain and signatures")
async def verify(app: BastionApp) -> AuditVerify:
    """Return ``ok``, how many records were checked and the first bad record, if any."""
    a = app.config.audit.anchor
    anchor = a.file.expanduser() if a is not None and a.file is not None else None
    rep = await asyncio.to_thread(app.audit.verify, anchor=anchor)
    return AuditVerify.model_validate(rep.to_dict())


@router.get("/export", summary="Export records as JSON lines or CSV", response_model=None,
            responses=media("records, oldest first", "application/x-ndjson", "text/csv")
            | errors(400))
async def export(
    app: BastionApp,
    fmt: Literal["jsonl", "csv"] = Query(default="jsonl", alias="format"),
    kind: str | None = None, session_id: str | None = None, tool: str | None = None,
    since: Time = None, until: Time = None,
    limit: int = Query(default=100_000, ge=1, le=1_000_000),
) -> PlainTextResponse:
    """Return the records oldest first."""
    keys = record_keys(app, session_id, every_owner=True) if session_id else None
    rows = app.audit.events(limit=limit, kind=kind, session_id=keys, tool=tool,
                            since=parse_time(since), until=parse_time(until),
                            newest_first=False)
    if fmt == "jsonl":
        body = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in rows)
        return PlainTextResponse(body, media_type="application/x-ndjson")
    buf = io.StringIO()
    write_csv(rows, buf)  # formula-looking cells made inert
    return PlainTextResponse(buf.getvalue(), media_type="text/csv")

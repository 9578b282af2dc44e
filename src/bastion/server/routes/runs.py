"""Unattended runs: list them, read one, fetch its signed receipt.

The run engine (:class:`bastion.tasks.runs.RunEngine`) starts with the server (``api.state.
run_engine``; the scheduler hands it the runs it fires: ``POST /v1/tasks/{name}/run``, the
clock, triggers) and takes up the runs a stop left behind. A run's approvals appear in
``/v1/approvals`` like any other.

- ``GET /v1/runs?task=NAME``: the caller's runs (an admin's ``all_users=true``: everyone's).
- ``GET /v1/runs/{id}``: one run with its call journal.
- ``GET /v1/runs/{id}/receipt``: the signed receipt of a finished run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request

from bastion.security.identity import owner_filter
from bastion.server.contract import ApiModel, errors, link, links
from bastion.server.errors import ApiError
from bastion.tasks.park import RunRecord
from bastion.tasks.runs import RunEngine, build_starter

RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="run id")]


@asynccontextmanager
async def _lifespan(api: FastAPI) -> AsyncIterator[None]:
    app = getattr(api.state, "bastion", None)
    engine = build_starter(app) if app is not None else None  # the scheduler's engine too
    api.state.run_engine = engine
    try:
        yield
    finally:
        if engine is not None:
            await engine.aclose()
        api.state.run_engine = None


router = APIRouter(prefix="/v1/runs", tags=["runs"], lifespan=_lifespan)


class RunOut(ApiModel):
    """A run as listed."""

    id: str
    task: str
    owner: str
    status: str
    reason: str | None
    created: float
    ended: float | None
    session_id: str | None
    trigger: dict[str, Any]
    parked: list[str]
    resumes: int
    steps: int
    tokens: int
    has_receipt: bool


class RunDetail(RunOut):
    """One run with its call journal."""

    calls: list[dict[str, Any]]


class RunList(ApiModel):
    """``GET /v1/runs``."""

    runs: list[RunOut]


class ReceiptCall(ApiModel):
    """One tool call of a run as its receipt names it."""

    call_id: str | None
    tool: str | None
    decision: str | None
    approver: str | None
    audit_id: int
    arguments_sha256: str


class ReceiptAudit(ApiModel):
    """The audit records a run wrote: ids ``first`` to ``last``."""

    first: int
    last: int


class ReceiptSignature(ApiModel):
    """The signature over the receipt's canonical JSON (all fields but this one)."""

    algorithm: str
    public_key: str
    value: str


class Receipt(ApiModel):
    """A finished run's signed receipt (``bastion run verify`` checks it offline)."""

    version: int
    run_id: str
    task: str
    owner: str
    trigger: dict[str, Any]
    session_id: str | None
    started: float
    ended: float | None
    status: str
    reason: str | None
    model: dict[str, Any] | None
    policy_hash: str
    tool_calls: list[ReceiptCall]
    audit: ReceiptAudit
    answer_sha256: str
    signature: ReceiptSignature


def engine_of(request: Request) -> RunEngine:
    """Return the server's run engine (409 when it is not running)."""
    engine: RunEngine | None = getattr(request.app.state, "run_engine", None)
    if engine is None:
        raise ApiError(409, "the run engine is not running", code="no_runs",
                       fix="serve an app assembled by build_app() (bastion serve)")
    return engine


def _mine(engine: RunEngine, run_id: str) -> RunRecord:
    run = engine.get(run_id)
    who = owner_filter()
    if run is None or (who is not None and run.owner != who):  # others' runs do not exist
        raise ApiError(404, f"no run {run_id}", code="run_not_found",
                       fix="list your runs with GET /v1/runs")
    return run


_LINKS = links(200, {
    "get_run": link("get_run", run_id="$response.body#/runs/0/id"),
    "get_receipt": link("get_receipt", run_id="$response.body#/runs/0/id"),
})


@router.get("", summary="List runs", responses=errors(409), operation_id="list_runs",
            openapi_extra=_LINKS)
async def list_runs(request: Request, task: Annotated[str | None, Query(max_length=64)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> RunList:
    """Return the caller's runs, newest first (of one task with ``task``)."""
    engine = engine_of(request)
    runs = engine.store.runs(task=task, owner=owner_filter(), limit=limit)
    return RunList(runs=[RunOut(**r.summary()) for r in runs])


@router.get("/{run_id}", summary="One run", responses=errors(404, 409), operation_id="get_run")
async def get_run(run_id: RunId, request: Request) -> RunDetail:
    """Return one run and its call journal."""
    engine = engine_of(request)
    run = _mine(engine, run_id)
    return RunDetail(**run.summary(), calls=engine.store.calls(run.id))


@router.get("/{run_id}/receipt", summary="A finished run's signed receipt",
            responses=errors(404, 409), operation_id="get_receipt", response_model=Receipt)
async def get_receipt(run_id: RunId, request: Request) -> dict[str, Any]:
    """Return the receipt (JSON, signed with the audit signer); 404 until the run ends."""
    run = _mine(engine_of(request), run_id)
    if run.receipt is None:
        raise ApiError(404, f"run {run_id} has no receipt yet ({run.status})",
                       code="no_receipt", fix="a receipt is written when the run ends")
    return run.receipt

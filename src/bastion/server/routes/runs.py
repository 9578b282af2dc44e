"""Unattended runs: start one, list them, read one, fetch its signed receipt.

The run engine (:class:`bastion.tasks.runs.RunEngine`) starts with the server (``api.state.
run_engine``; the scheduler hands it the runs it fires) and takes up the runs a stop left
behind. A run's approvals appear in ``/v1/approvals`` like any other.

- ``POST /v1/runs``: run a task definition once now, as the caller (``{"task": {...}}``).
- ``GET /v1/runs?task=NAME``: the caller's runs (an admin's ``all_users=true``: everyone's).
- ``GET /v1/runs/{id}``: one run with its call journal.
- ``GET /v1/runs/{id}/receipt``: the signed receipt of a finished run.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request
from pydantic import ConfigDict, Field

from bastion.errors import BastionError
from bastion.security.identity import owner_filter, owner_name
from bastion.server.contract import ApiModel, errors
from bastion.server.errors import ApiError
from bastion.tasks.park import RunRecord
from bastion.tasks.runs import RunEngine
from bastion.tasks.spec import NotifyTarget, Schedule, TaskPolicy, TaskSpec, Trigger

RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="run id")]


@asynccontextmanager
async def _lifespan(api: FastAPI) -> AsyncIterator[None]:
    app = getattr(api.state, "bastion", None)
    engine = None
    if app is not None:
        engine = RunEngine(app)
        await engine.open()
    api.state.run_engine = engine
    try:
        yield
    finally:
        if engine is not None:
            await engine.aclose()
        api.state.run_engine = None


router = APIRouter(prefix="/v1/runs", tags=["runs"], lifespan=_lifespan)


class RunTask(ApiModel):
    """The task a one-off run carries (stored tasks live in ``/v1/tasks``)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    prompt: str = Field(min_length=1, max_length=20_000)
    policy: dict[str, Any] = Field(default_factory=dict, description="TaskPolicy fields")
    notify: list[str] = Field(default_factory=list, max_length=16,
                              description="https://hook, ntfy:https://host/topic, mailto:a@b")


class StartBody(ApiModel):
    """``POST /v1/runs``."""

    model_config = ConfigDict(extra="forbid")
    task: RunTask


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


class Started(ApiModel):
    """``POST /v1/runs``: the new run's id."""

    id: str
    status: str


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


@router.post("", summary="Run a task definition once, now", status_code=202,
             responses=errors(400, 409))
async def start_run(body: StartBody, request: Request) -> Started:
    """Start an unattended run of ``task`` as the caller; return its id at once."""
    engine = engine_of(request)
    try:
        spec = TaskSpec(body.task.name, owner_name(), body.task.prompt, Schedule("manual"),
                        policy=TaskPolicy.from_dict(body.task.policy),
                        notify=tuple(NotifyTarget.parse(n) for n in body.task.notify))
    except (BastionError, KeyError, TypeError, ValueError) as exc:
        msg = exc.user_text() if isinstance(exc, BastionError) else f"bad task: {exc}"
        raise ApiError(400, msg, code="bad_task", fix="see TaskPolicy in the README") from exc
    run_id = engine.start(spec, Trigger("manual", time.time(), "POST /v1/runs"))
    return Started(id=run_id, status="running")


@router.get("", summary="List runs", responses=errors(409))
async def list_runs(request: Request, task: Annotated[str | None, Query(max_length=64)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> RunList:
    """Return the caller's runs, newest first (of one task with ``task``)."""
    engine = engine_of(request)
    runs = engine.store.runs(task=task, owner=owner_filter(), limit=limit)
    return RunList(runs=[RunOut(**r.summary()) for r in runs])


@router.get("/{run_id}", summary="One run", responses=errors(404, 409))
async def get_run(run_id: RunId, request: Request) -> RunDetail:
    """Return one run and its call journal."""
    engine = engine_of(request)
    run = _mine(engine, run_id)
    return RunDetail(**run.summary(), calls=engine.store.calls(run.id))


@router.get("/{run_id}/receipt", summary="A finished run's signed receipt",
            responses=errors(404, 409))
async def get_receipt(run_id: RunId, request: Request) -> dict[str, Any]:
    """Return the receipt (JSON, signed with the audit signer); 404 until the run ends."""
    run = _mine(engine_of(request), run_id)
    if run.receipt is None:
        raise ApiError(404, f"run {run_id} has no receipt yet ({run.status})",
                       code="no_receipt", fix="a receipt is written when the run ends")
    return run.receipt

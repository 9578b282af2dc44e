"""Unattended tasks: ``/v1/tasks`` (scope ``tasks``) and the signed trigger (``tasks:trigger``).

Tasks belong to the key's user: another user's task answers 404, exactly as a task that does
not exist (an admin's ``?all_users=true`` lists everyone's). A webhook task's secret is in
the ``201`` of its creation only. ``POST /v1/tasks/{name}/trigger`` needs both a key with
``tasks:trigger`` and the HMAC signature of :mod:`bastion.tasks.triggers`; ``run`` and
``trigger`` answer ``202`` with the run id and never wait for the run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from bastion.app import App, workspace_dir
from bastion.errors import BastionError
from bastion.security.identity import owner_filter, owner_name
from bastion.server._tasks import scheduler_of
from bastion.server.contract import ApiModel, errors, link, links
from bastion.server.deps import BastionApp
from bastion.server.errors import ApiError
from bastion.tasks import triggers
from bastion.tasks.schedule import next_fire
from bastion.tasks.scheduler import Scheduler, check_new
from bastion.tasks.spec import (
    AutoApprove,
    NotifyTarget,
    Schedule,
    ScheduleKind,
    TaskLimitError,
    TaskPolicy,
    TaskSpec,
    Trigger,
)
from bastion.tasks.store import Fire, StoredTask
from bastion.tools.base import Risk

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TaskName = Annotated[str, Path(pattern=NAME_PATTERN, description="the task's name")]
RiskName = Literal["low", "medium", "high"]


class AutoApproveBody(ApiModel):
    """Calls of tools matching ``tool`` up to ``max_risk`` run without a human (never CRITICAL)."""

    model_config = ConfigDict(extra="forbid")

    tool: str = Field(min_length=1, max_length=200, description="tool name or glob")
    max_risk: RiskName = "medium"


class PolicyBody(ApiModel):
    """What a run may do; ``null`` fields add no limit beyond the owner's and the config's."""

    model_config = ConfigDict(extra="forbid")

    tools: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=100, description="allowed tool names or globs")
    max_steps: int | None = Field(default=None, ge=1, le=1000)
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    wall_clock_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    egress: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        default=None, max_length=100, description="allowed domains (globs)")
    approval_deadline_s: float = Field(default=3600.0, gt=0, le=30 * 86400)
    auto_approve: list[AutoApproveBody] = Field(default_factory=list, max_length=50)


class ScheduleBody(ApiModel):
    """When it fires.

    ``cron`` (a cron line), ``every`` (15m), ``at`` (ISO time), ``file`` (a workspace folder),
    ``webhook`` or ``manual`` (no ``expr``).
    """

    model_config = ConfigDict(extra="forbid")

    kind: ScheduleKind
    expr: str = Field(default="", max_length=200)


class TaskCreate(ApiModel):
    """``POST /v1/tasks``: a new task of the key's user."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    prompt: str = Field(min_length=1, max_length=20_000)
    schedule: ScheduleBody
    tz: str = Field(default="UTC", min_length=1, max_length=64, description="IANA time zone")
    policy: PolicyBody = Field(default_factory=PolicyBody)
    notify: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=20,
        description="https://... (webhook), ntfy:https://host/topic, mailto:a@b.c")
    missed: Literal["skip", "run_once"] = "run_once"
    paused: bool = False


class ScheduleOut(BaseModel):
    """When a task fires."""

    kind: str
    expr: str


class AutoApproveOut(BaseModel):
    """An auto-approval rule."""

    tool: str
    max_risk: str


class PolicyOut(BaseModel):
    """A task's policy."""

    tools: list[str] | None
    max_steps: int | None
    max_tokens: int | None
    wall_clock_s: float | None
    egress: list[str] | None
    approval_deadline_s: float
    auto_approve: list[AutoApproveOut]


class FireOut(BaseModel):
    """One fire of a task: its trigger, the run it started, or why none started."""

    kind: str
    fired_at: float
    detail: str
    run_id: str | None
    error: str | None
    queued: bool


class TaskOut(BaseModel):
    """A task."""

    name: str
    owner: str
    prompt: str
    schedule: ScheduleOut
    tz: str
    policy: PolicyOut
    notify: list[str]
    missed: str
    paused: bool
    created_at: float
    updated_at: float
    last_fire: float | None = Field(description="the last clock fire time handled")
    next_fire: float | None = Field(description="the next clock fire time (Unix seconds)")
    policy_hash: str = Field(description="sha256 of the policy (run receipts name it)")
    fires: list[FireOut] = Field(default_factory=list, description="latest fires, newest first")


class TaskCreated(TaskOut):
    """A new task; ``webhook_secret`` is shown here once and never again."""

    webhook_secret: str | None = Field(
        description="HMAC key for POST /v1/tasks/{name}/trigger (webhook tasks only)")


class TaskList(BaseModel):
    """The caller's tasks."""

    tasks: list[TaskOut]


class RunStarted(BaseModel):
    """A run that started (it runs on; the scheduler does not wait for it)."""

    task: str
    run_id: str


class SecretOut(BaseModel):
    """A new webhook secret (the old one no longer signs)."""

    task: str
    webhook_secret: str


def _fire_out(f: Fire) -> FireOut:
    return FireOut(kind=f.trigger.kind, fired_at=f.trigger.fired_at, detail=f.trigger.detail,
                   run_id=f.run_id, error=f.error, queued=f.queued)


def task_out(task: StoredTask, fires: list[Fire] | None = None) -> dict[str, Any]:
    """Return the API's view of a task (never its secret)."""
    spec = task.spec
    mark = task.created_at if task.last_fire is None else task.last_fire
    nxt = None if spec.paused or not spec.schedule.clock else next_fire(
        spec.schedule, spec.tz, mark)
    return {**spec.to_dict(), "created_at": task.created_at, "updated_at": task.updated_at,
            "last_fire": task.last_fire, "next_fire": nxt, "policy_hash": spec.policy.digest(),
            "fires": [_fire_out(f).model_dump() for f in fires or ()]}


def _spec(body: TaskCreate, owner: str) -> TaskSpec:
    p = body.policy
    policy = TaskPolicy(
        tools=None if p.tools is None else tuple(p.tools), max_steps=p.max_steps,
        max_tokens=p.max_tokens, wall_clock_s=p.wall_clock_s,
        egress=None if p.egress is None else tuple(p.egress),
        approval_deadline_s=p.approval_deadline_s,
        auto_approve=tuple(AutoApprove(r.tool, Risk.parse(r.max_risk)) for r in p.auto_approve))
    return TaskSpec(name=body.name, owner=owner, prompt=body.prompt,
                    schedule=Schedule(body.schedule.kind, body.schedule.expr), tz=body.tz,
                    policy=policy, notify=tuple(NotifyTarget.parse(n) for n in body.notify),
                    missed=body.missed, paused=body.paused)


def _audit(app: App, kind: str, name: str, decision: str, **detail: Any) -> None:
    app.audit.record(kind, actor="api", decision=decision, detail={"task": name, **detail})


def _get(sched: Scheduler, name: str) -> StoredTask:
    return sched.store.get(owner_name(), name)  # another user's: "no task named", a 404


def _limit_error(exc: TaskLimitError) -> ApiError:
    if exc.message.startswith("no run engine"):
        return ApiError(409, exc.message, code="no_run_engine",
                        fix="this bastion has no run engine yet (bastion.tasks.runs); the "
                            "fire is recorded on the task")
    return ApiError(429, exc.message, code="too_many_runs", fix=exc.fix,
                    headers={"Retry-After": "30"})


_LINKS = links(201, {
    "get_task": link("get_task", name="$response.body#/name"),
    "pause_task": link("pause_task", name="$response.body#/name"),
    "run_task": link("run_task", name="$response.body#/name"),
    "delete_task": link("delete_task", name="$response.body#/name"),
})


@router.post("", summary="Add a task", status_code=201, response_model=TaskCreated,
             responses=errors(400, 409), operation_id="add_task", openapi_extra=_LINKS)
async def add_task(body: TaskCreate, app: BastionApp, request: Request) -> dict[str, Any]:
    """Add a task of the key's user; a webhook task's secret is in this answer only."""
    sched = scheduler_of(request)
    spec = _spec(body, owner_name())
    check_new(spec, now=time.time(), workspace=workspace_dir(app.config))
    try:
        task, secret = await asyncio.to_thread(sched.store.add, spec)
    except BastionError as exc:
        if "already has a task" in exc.message:
            raise ApiError(409, exc.message, code="task_exists", fix=exc.fix) from exc
        raise
    _audit(app, "task.add", spec.name, "allowed", schedule=spec.schedule.kind,
           policy_hash=spec.policy.digest())
    return {**task_out(task), "webhook_secret": secret}


@router.get("", summary="List tasks", response_model=TaskList, operation_id="list_tasks")
async def list_tasks(request: Request) -> dict[str, Any]:
    """List the key's user's tasks (an admin's ``?all_users=true``: everyone's)."""
    sched = scheduler_of(request)
    owner = None if owner_filter() is None else owner_name()
    tasks = await asyncio.to_thread(sched.store.list_tasks, owner)
    return {"tasks": [task_out(t) for t in tasks]}


@router.get("/{name}", summary="Show a task and its latest fires", response_model=TaskOut,
            responses=errors(404), operation_id="get_task")
async def get_task(name: TaskName, request: Request) -> dict[str, Any]:
    """Return a task with its latest fires (run ids, or why no run started)."""
    sched = scheduler_of(request)
    task = await asyncio.to_thread(_get, sched, name)
    return task_out(task, await asyncio.to_thread(sched.store.fires, task.id))


async def _pause(name: str, paused: bool, app: App, request: Request) -> dict[str, Any]:
    sched = scheduler_of(request)
    task = await asyncio.to_thread(sched.store.set_paused, owner_name(), name, paused)
    _audit(app, "task.pause" if paused else "task.resume", name, "allowed")
    return task_out(task)


@router.post("/{name}/pause", summary="Pause a task", response_model=TaskOut,
             responses=errors(404), operation_id="pause_task")
async def pause_task(name: TaskName, app: BastionApp, request: Request) -> dict[str, Any]:
    """Stop firing the task until it is resumed (runs going on are not touched)."""
    return await _pause(name, True, app, request)


@router.post("/{name}/resume", summary="Resume a task", response_model=TaskOut,
             responses=errors(404), operation_id="resume_task")
async def resume_task(name: TaskName, app: BastionApp, request: Request) -> dict[str, Any]:
    """Fire the task again from now on (what fell due while paused does not run)."""
    return await _pause(name, False, app, request)


@router.delete("/{name}", summary="Remove a task", status_code=204, responses=errors(404),
               operation_id="delete_task")
async def delete_task(name: TaskName, app: BastionApp, request: Request) -> None:
    """Remove the task, its fire record and its webhook secret."""
    sched = scheduler_of(request)
    await asyncio.to_thread(sched.store.remove, owner_name(), name)
    _audit(app, "task.remove", name, "allowed")


@router.post("/{name}/run", summary="Run a task now", status_code=202,
             response_model=RunStarted, responses=errors(404, 409),
             operation_id="run_task")
async def run_task(name: TaskName, app: BastionApp, request: Request) -> dict[str, Any]:
    """Start a run of the task now (paused or not); answer with its id without waiting."""
    sched = scheduler_of(request)
    task = await asyncio.to_thread(_get, sched, name)
    try:
        run_id = sched.start(task, Trigger("manual", time.time(), "run now (API)"))
    except TaskLimitError as exc:
        raise _limit_error(exc) from exc
    return {"task": name, "run_id": run_id}


@router.post("/{name}/secret", summary="Rotate a webhook task's secret",
             response_model=SecretOut, responses=errors(404, 409), operation_id="rotate_secret")
async def rotate_secret(name: TaskName, app: BastionApp, request: Request) -> dict[str, Any]:
    """Draw a new webhook secret (shown once); the old one stops signing at once."""
    sched = scheduler_of(request)
    task = await asyncio.to_thread(_get, sched, name)
    if task.spec.schedule.kind != "webhook":
        raise ApiError(409, f"task {name!r} is not a webhook task", code="not_a_webhook_task",
                       fix="only tasks added with --webhook have a secret")
    secret = await asyncio.to_thread(sched.store.rotate_secret, owner_name(), name)
    _audit(app, "task.secret", name, "allowed")
    return {"task": name, "webhook_secret": secret}


_TRIGGER_BODY = {"requestBody": {"required": False, "content": {
    "application/json": {"schema": {"description": "any JSON; the run gets it as untrusted "
                                                   "data (at most 64 KiB)"}}}}}


@router.post("/{name}/trigger", summary="Fire a webhook task (HMAC-signed)", status_code=202,
             response_model=RunStarted, responses=errors(400, 404, 409, 413),
             operation_id="trigger_task", openapi_extra=_TRIGGER_BODY)
async def trigger_task(
    name: TaskName, app: BastionApp, request: Request,
    x_bastion_timestamp: Annotated[str, Header(max_length=20, description="Unix seconds")],
    x_bastion_nonce: Annotated[str, Header(max_length=200, description="16-128 of A-Za-z0-9_-, "
                                                                       "never reused")],
    x_bastion_signature: Annotated[str, Header(
        max_length=200,
        description="sha256=hex HMAC-SHA-256(secret, '<timestamp>.<nonce>.' + body)")],
) -> dict[str, Any]:
    """Start a run of a webhook task when the signature, timestamp and nonce check out."""
    sched = scheduler_of(request)
    body = await _body(request)
    task = await asyncio.to_thread(_get, sched, name)
    secret = await asyncio.to_thread(sched.store.secret, task)
    if secret is None or task.spec.schedule.kind != "webhook":
        raise ApiError(404, f"task {name!r} has no webhook trigger", code="not_a_webhook_task",
                       fix=f"add one with: bastion task add {name} --webhook")
    now = time.time()
    window = app.config.tasks.webhook_window_s
    try:
        triggers.check(secret, x_bastion_timestamp, x_bastion_nonce, x_bastion_signature, body,
                       now=now, window_s=window)
        fresh = await asyncio.to_thread(sched.store.use_nonce, task.id, x_bastion_nonce, now,
                                        window)
        if not fresh:
            raise triggers.replayed()
    except triggers.TriggerRefused as exc:
        _audit(app, "task.trigger", name, "denied", reason=exc.code)
        # from None: the refused request's signature and nonce stay out of tracebacks
        raise ApiError(401, exc.message, code=exc.code, fix=exc.fix) from None
    if task.spec.paused:
        raise ApiError(409, f"task {name!r} is paused", code="task_paused",
                       fix=f"bastion task resume {name}")
    _audit(app, "task.trigger", name, "allowed", nonce=x_bastion_nonce)
    trigger = Trigger("webhook", now, f"webhook nonce {x_bastion_nonce}",
                      body.decode("utf-8", errors="replace"))
    try:
        run_id = sched.start(task, trigger)
    except TaskLimitError as exc:
        raise _limit_error(exc) from exc
    return {"task": name, "run_id": run_id}


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > triggers.MAX_BODY:
        raise _too_large()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > triggers.MAX_BODY:
            raise _too_large()
    return body


def _too_large() -> ApiError:
    return ApiError(413, f"a trigger's body may be at most {triggers.MAX_BODY} bytes",
                    code="body_too_large", fix="send less; the run gets the body as its input")

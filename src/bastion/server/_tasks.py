"""The task scheduler's life inside ``bastion serve``: started with the app, stopped with it.

The run engine comes from ``api.state.run_starter`` when a caller set one (tests), else from
``bastion.tasks.runs.build_starter(app)`` when the run engine exists; without one the
scheduler still keeps time and records each fire as "no run engine".
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from bastion.server.errors import ApiError
from bastion.tasks.scheduler import Limits, Scheduler
from bastion.tasks.store import open_store

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from bastion.app import App
    from bastion.tasks.spec import RunStarter


def _engine(api: FastAPI, app: App) -> RunStarter | None:
    given: RunStarter | None = getattr(api.state, "run_starter", None)
    if given is not None:
        return given
    try:
        runs: Any = importlib.import_module("bastion.tasks.runs")
    except ModuleNotFoundError as exc:
        if exc.name == "bastion.tasks.runs":
            return None
        raise
    build = getattr(runs, "build_starter", None)
    return None if build is None else build(app)


def start_tasks(api: FastAPI, app: App) -> None:
    """Open the task store and start the scheduler loop (when ``tasks.scheduler`` is on)."""
    from bastion.app import workspace_dir

    cfg = app.config.tasks
    scheduler = Scheduler(open_store(), _engine(api, app),
                          limits=Limits(cfg.max_concurrent, cfg.max_concurrent_per_user),
                          workspace=workspace_dir(app.config), debounce_ms=cfg.watch_debounce_ms)
    api.state.tasks = scheduler
    api.state.tasks_loop = (asyncio.create_task(scheduler.serve(), name="bastion-scheduler")
                            if cfg.scheduler else None)


async def stop_tasks(api: FastAPI) -> None:
    """Stop the scheduler loop and close the task store."""
    loop: asyncio.Task[None] | None = getattr(api.state, "tasks_loop", None)
    if loop is not None:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        api.state.tasks_loop = None
    scheduler: Scheduler | None = getattr(api.state, "tasks", None)
    if scheduler is not None:
        scheduler.store.close()
        api.state.tasks = None


def scheduler_of(conn: HTTPConnection) -> Scheduler:
    """Return the server's scheduler (503 while it starts)."""
    scheduler: Scheduler | None = getattr(conn.app.state, "tasks", None)
    if scheduler is None:
        raise ApiError(503, "the task scheduler is not running yet", code="starting",
                       fix="retry in a moment")
    return scheduler

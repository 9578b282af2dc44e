"""Concurrency limits against the real run engine: a run holds its slot until it finishes.

A real assembled app (``build_app``: audit log, gateway, approvals) and the real ``RunEngine``
over a real SQLite run store; the model is gated so the runs stay "going" until the test opens
the gate. The scheduler's limits are checked when a run starts, as in ``bastion serve``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bastion.app import build_app
from bastion.config.model import ApiConfig, Config, MemoryConfig
from bastion.tasks.park import RunStore
from bastion.tasks.runs import RunEngine
from bastion.tasks.scheduler import Limits, Scheduler
from bastion.tasks.spec import Schedule, TaskLimitError, TaskSpec, Trigger
from bastion.tasks.store import StoredTask, TaskStore
from tests.fakes.gated_model import GatedModel


async def _until_idle(engine: RunEngine, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while engine.active():
        assert time.monotonic() < deadline, "the runs did not finish"
        await asyncio.sleep(0.02)


async def test_limits_hold_while_real_runs_go_and_free_when_they_end(bastion_home: Path) -> None:
    config = Config(api=ApiConfig(token="t" * 32), memory=MemoryConfig(enabled=False))
    config.security.sandbox = "none"
    model = GatedModel("working", "done")
    app = build_app(config, model=model)
    engine = RunEngine(app, RunStore(bastion_home / "runs.db"))
    engine.open()
    store = TaskStore(bastion_home)
    try:
        sched = Scheduler(store, engine, limits=Limits(total=2, per_user=1))
        tasks: dict[str, StoredTask] = {}
        for name, owner in [("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("c1", "carol")]:
            tasks[name] = store.add(TaskSpec(name, owner, "work", Schedule("manual")))[0]
        now = Trigger("manual", time.time(), "test")
        sched.start(tasks["a1"], now)
        with pytest.raises(TaskLimitError, match="per user is 1"):
            sched.start(tasks["a2"], now)  # alice's first run still holds its worker
        sched.start(tasks["b1"], now)
        with pytest.raises(TaskLimitError, match="all users is 2"):
            sched.start(tasks["c1"], now)
        assert engine.active() == 2 and engine.active("alice") == 1
        assert [f.error for f in store.fires(tasks["c1"].id)] == [
            "2 task runs are going already (the limit for all users is 2)"]
        model.gate.set()
        await _until_idle(engine)
        assert sched.start(tasks["a2"], now) and sched.start(tasks["c1"], now)
        await _until_idle(engine)
    finally:
        store.close()
        await engine.aclose()
        await app.aclose()

"""The scheduler inside ``bastion serve``: fires due tasks and never waits for a run.

Each tick (at most a second apart, sooner when a fire is due) it:

1. reloads the tasks when the store's generation changed (the CLI or the API edited one);
2. starts the fires queued by ``bastion task run-now``;
3. pops the clock tasks due by now from a heap and applies :func:`~bastion.tasks.schedule.plan`
   (missed fires: ``skip`` or ``run_once``).

Starting a run is :meth:`RunStarter.start` (the run engine records the run and hands it to a
worker), behind the concurrency limits: at most ``tasks.max_concurrent`` runs at once, and
``tasks.max_concurrent_per_user`` for one owner. A fire over a limit is refused, recorded
with its reason, and not retried (the next fire time comes as usual).

Watched folders (``--watch DIR``) are watched with ``watchfiles`` (inotify on Linux): a burst
of new files within ``tasks.watch_debounce_ms`` fires one run, whose trigger names the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import BastionError, ConfigError
from bastion.tasks.schedule import GRACE_S, Plan, next_fire, plan
from bastion.tasks.spec import RunStarter, TaskLimitError, TaskSpec, Trigger, parse_at
from bastion.tasks.store import StoredTask, TaskStore

log = logging.getLogger("bastion.tasks")
MAX_SLEEP_S = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """How many runs may go at once: all users together, and one user."""

    total: int = 4
    per_user: int = 2


def watched_folder(workspace: Path, folder: str) -> Path:
    """Return ``folder`` resolved inside ``workspace``; a folder outside it is refused."""
    root = workspace.resolve()
    path = (root / folder).resolve()
    if path != root and root not in path.parents:
        raise ConfigError(f"--watch {folder} is outside the workspace {root}",
                          fix="watch a folder inside the workspace, e.g. --watch inbox")
    return path


def check_new(spec: TaskSpec, *, now: float, workspace: Path | None) -> None:
    """Refuse a new task that could never fire: an ``--at`` time passed, a folder outside."""
    if spec.schedule.kind == "at" and parse_at(spec.schedule.expr, spec.tz) <= now:
        raise ConfigError(f"--at {spec.schedule.expr} is in the past",
                          fix="give a later time, or use run-now")
    if spec.schedule.kind == "file" and workspace is not None:
        watched_folder(workspace, spec.schedule.expr)


class Scheduler:
    """Fires tasks from one :class:`TaskStore` through one :class:`RunStarter`."""

    def __init__(self, store: TaskStore, starter: RunStarter | None = None, *,
                 limits: Limits | None = None, workspace: Path | None = None,
                 clock: Callable[[], float] = time.time, grace: float = GRACE_S,
                 debounce_ms: int = 500) -> None:
        self.store = store
        self.starter = starter
        self.limits = limits or Limits()
        self.workspace = workspace
        self.clock = clock
        self.grace = grace
        self.debounce_ms = debounce_ms
        self._generation = -1
        self._tasks: dict[int, StoredTask] = {}
        self._heap: list[tuple[float, int]] = []
        self._watchers: dict[int, asyncio.Task[None]] = {}
        self._watch_specs: dict[int, str] = {}

    # ---- the timing logic (synchronous, driven by a fake clock in unit tests) ----------------
    def reload(self, now: float) -> None:
        """Read every task again and rebuild the heap of next fire times."""
        self._generation = self.store.generation()
        self._tasks = {t.id: t for t in self.store.iter_all()}
        heap: list[tuple[float, int]] = []
        for task in self._tasks.values():
            spec = task.spec
            if spec.paused or not spec.schedule.clock:
                continue
            nxt = next_fire(spec.schedule, spec.tz, self._mark(task))
            if nxt is not None:
                heap.append((nxt, task.id))
        heapq.heapify(heap)
        self._heap = heap

    @staticmethod
    def _mark(task: StoredTask) -> float:
        return task.created_at if task.last_fire is None else task.last_fire

    def tick(self, now: float | None = None) -> list[str]:
        """Fire whatever is due at ``now``; return the run ids started."""
        now = self.clock() if now is None else now
        if self.store.generation() != self._generation:
            self.reload(now)
        started: list[str] = []
        for fire in self.store.queued():
            task = self.store.by_id(fire.task_id)
            if task is not None:
                run_id = self._start(task, fire.trigger, fire_id=fire.id)
                if run_id:
                    started.append(run_id)
        if self._heap and self._heap[0][0] <= now:
            started += self._fire_due(now)
        return started

    def _fire_due(self, now: float) -> list[str]:
        """Fire the clock tasks due by ``now``: at most once each, even across a crash.

        Every due task's new mark is committed first (one transaction), then the runs are
        started and recorded (a second one): a crash between the two loses those fires
        (recorded nowhere, like a missed fire) but never starts one twice.
        """
        due: list[tuple[StoredTask, Plan]] = []
        while self._heap and self._heap[0][0] <= now:
            _, task_id = heapq.heappop(self._heap)
            task = self._tasks.get(task_id)
            if task is None or task.spec.paused:
                continue
            spec = task.spec
            p = plan(spec.schedule, spec.tz, spec.missed, self._mark(task), now, self.grace)
            due.append((task, p))
            self._tasks[task_id] = StoredTask(task.id, spec, task.created_at, task.updated_at,
                                              p.handled, task.has_secret)
            if p.next is not None:
                heapq.heappush(self._heap, (p.next, task_id))
        with self.store.transaction():
            for task, p in due:
                self.store.mark_fired(task.id, p.handled)
        started: list[str] = []
        with self.store.transaction():
            for task, p in due:
                spec = task.spec
                if p.fire is not None:
                    detail = f"{spec.schedule.kind} {spec.schedule.expr}".strip()
                    if p.missed:
                        detail += " (missed while bastion was down; run once)"
                    run_id = self._start(task, Trigger(spec.schedule.kind, p.fire, detail))
                    if run_id:
                        started.append(run_id)
                elif p.missed:
                    self.store.record_fire(task.id, Trigger(spec.schedule.kind, p.handled,
                                                            "missed while bastion was down"),
                                           run_id=None, error="skipped (missed: skip)")
        return started

    def wait_s(self, now: float | None = None) -> float:
        """Return how long the loop may sleep before the next tick."""
        now = self.clock() if now is None else now
        if not self._heap:
            return MAX_SLEEP_S
        return min(MAX_SLEEP_S, max(0.0, self._heap[0][0] - now))

    # ---- starting runs ----------------------------------------------------------------------
    def check_limits(self, owner: str) -> None:
        """Raise :class:`TaskLimitError` when no run of ``owner`` may start now."""
        if self.starter is None:
            raise TaskLimitError("no run engine is running in this bastion",
                                 fix="start the server: bastion serve")
        going = self.starter.active(None)
        if going >= self.limits.total:
            raise TaskLimitError(f"{going} task runs are going already (the limit for all "
                                 f"users is {self.limits.total})",
                                 fix="wait for one to finish, or raise tasks.max_concurrent")
        mine = self.starter.active(owner)
        if mine >= self.limits.per_user:
            raise TaskLimitError(f"{mine} runs of {owner} are going already (the limit per "
                                 f"user is {self.limits.per_user})",
                                 fix="wait for one to finish, or raise "
                                     "tasks.max_concurrent_per_user")

    def start(self, task: StoredTask, trigger: Trigger) -> str:
        """Start a run now (run-now, webhook); raise :class:`TaskLimitError` when refused."""
        try:
            self.check_limits(task.spec.owner)
            assert self.starter is not None
            run_id = self.starter.start(task.spec, trigger)
        except BastionError as exc:
            self.store.record_fire(task.id, trigger, run_id=None, error=exc.message)
            raise
        self.store.record_fire(task.id, trigger, run_id=run_id, error=None)
        return run_id

    def _start(self, task: StoredTask, trigger: Trigger, *, fire_id: int | None = None
               ) -> str | None:
        """Start a run from the loop: failures are recorded and logged, never raised."""
        error: str | None = None
        run_id: str | None = None
        try:
            self.check_limits(task.spec.owner)
            assert self.starter is not None
            run_id = self.starter.start(task.spec, trigger)
        except BastionError as exc:
            error = exc.message
        except Exception as exc:  # a bug in the engine must not stop the scheduler
            log.exception("task %s/%s: starting a run failed", task.spec.owner, task.spec.name)
            error = f"internal error: {type(exc).__name__}"
        if error is not None:
            log.warning("task %s/%s not started: %s", task.spec.owner, task.spec.name, error)
        self.store.record_fire(task.id, trigger, run_id=run_id, error=error, fire_id=fire_id)
        return run_id

    # ---- the loop and the watched folders ---------------------------------------------------
    async def serve(self) -> None:
        """Tick until cancelled (``bastion serve``'s lifespan runs this as a task)."""
        try:
            while True:
                try:
                    self.tick()
                    self._sync_watchers()
                except Exception:  # keep scheduling: log and try again on the next tick
                    log.exception("scheduler tick failed")
                await asyncio.sleep(self.wait_s())
        finally:
            for watcher in self._watchers.values():
                watcher.cancel()
            for watcher in self._watchers.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
            self._watchers.clear()

    def _sync_watchers(self) -> None:
        if self.workspace is None:
            return
        wanted = {t.id: t for t in self._tasks.values()
                  if t.spec.schedule.kind == "file" and not t.spec.paused}
        for task_id in list(self._watchers):
            task = wanted.get(task_id)
            if task is None or self._watch_specs.get(task_id) != task.spec.schedule.expr:
                self._watchers.pop(task_id).cancel()
                self._watch_specs.pop(task_id, None)
        for task_id, task in wanted.items():
            if task_id not in self._watchers:
                self._watch_specs[task_id] = task.spec.schedule.expr
                self._watchers[task_id] = asyncio.create_task(self._watch(task))

    async def _watch(self, task: StoredTask) -> None:
        from watchfiles import Change, awatch

        assert self.workspace is not None
        try:
            folder = watched_folder(self.workspace, task.spec.schedule.expr)
            folder.mkdir(parents=True, exist_ok=True)
        except (ConfigError, OSError) as exc:
            log.warning("task %s/%s: cannot watch %s: %s", task.spec.owner, task.spec.name,
                        task.spec.schedule.expr, exc)
            return
        async for changes in awatch(folder, debounce=self.debounce_ms, recursive=False,
                                    step=50, rust_timeout=1000):
            added = sorted({Path(p) for kind, p in changes if kind == Change.added})
            files = [p for p in added if p.is_file() and not p.name.startswith(".")]
            if not files:
                continue
            latest = self.store.by_id(task.id)
            if latest is None or latest.spec.paused:
                return
            names = "\n".join(str(p.relative_to(self.workspace.resolve())) for p in files)
            self._start(latest, Trigger("file", self.clock(),
                                        f"{len(files)} new file(s) in {task.spec.schedule.expr}",
                                        names))


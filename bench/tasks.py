"""What the task scheduler costs: per due task, and idle with many tasks scheduled.

    python bench/tasks.py [--tasks 1000] [--idle-s 10] [--out bench/results/tasks.txt]

Real SQLite task store in a temporary home; the run engine is a no-op ``RunStarter`` (returns
a run id at once), so what is measured is the scheduler: plan the fire (croniter for cron
lines), record it, move the task's mark, push its next time.

1. Per due task: ``--tasks`` tasks (half ``every``, half ``cron``) all due at one moment, one
   ``tick``; against the no-op baseline of calling the starter that many times in the same
   run. Also one task due per tick (p50 over 200 ticks), the common case.
2. Idle: ``--tasks`` tasks scheduled, none due, the scheduler's real loop (``serve``) for
   ``--idle-s`` seconds; process CPU time over the window, against a no-op loop that sleeps
   as often (once a second) for the same time, in the same run. Printed as % of one core.

Targets (issue #21): <= 5 ms per due task; idle <= 1% of one core for 1,000 tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bastion.tasks.scheduler import Limits, Scheduler  # noqa: E402
from bastion.tasks.spec import Schedule, TaskSpec, Trigger  # noqa: E402
from bastion.tasks.store import TaskStore  # noqa: E402


class NoopStarter:
    """A run engine that starts nothing and answers at once."""

    def __init__(self) -> None:
        self.n = 0

    def start(self, spec: TaskSpec, trigger: Trigger) -> str:
        self.n += 1
        return f"run-{self.n}"

    def active(self, owner: str | None = None) -> int:
        return 0


def fill(store: TaskStore, n: int, created: float, *, every: str, cron: str) -> None:
    for i in range(n):
        sched = Schedule("every", every) if i % 2 else Schedule("cron", cron)
        store.add(TaskSpec(name=f"t{i:05d}", owner=f"u{i % 10}", prompt="p", schedule=sched,
                           tz="Europe/Paris"), now=created)


def per_due(n: int, home: Path) -> list[str]:
    store = TaskStore(home / "due")
    t0 = 1_780_000_000.0 - 30  # every task due 60 s after t0; the cron one at minute marks
    fill(store, n, t0, every="60s", cron="* * * * *")
    starter = NoopStarter()
    sched = Scheduler(store, starter, limits=Limits(10**6, 10**6))
    sched.reload(t0)
    now = t0 + 61
    begin = time.perf_counter()
    started = sched.tick(now)
    batch = time.perf_counter() - begin
    assert len(started) == n, len(started)
    spec, trigger = store.list_tasks()[0].spec, Trigger("manual", now)
    begin = time.perf_counter()
    for _ in range(n):
        starter.start(spec, trigger)
    base = time.perf_counter() - begin
    store.close()

    single = TaskStore(home / "single")
    fill(single, 1, t0, every="60s", cron="* * * * *")  # one cron task, due every minute
    sched = Scheduler(single, NoopStarter())
    sched.reload(t0)
    times = []
    for k in range(200):
        now = t0 + 60 * (k + 1) + 1
        begin = time.perf_counter()
        assert len(sched.tick(now)) == 1
        times.append(time.perf_counter() - begin)
    single.close()
    per = (batch - base) / n * 1000
    p50 = statistics.median(times) * 1000
    return [
        f"per due task ({n} due in one tick, half cron, half every): {per:.3f} ms "
        f"(tick {batch * 1000:.1f} ms, no-op starter baseline {base * 1000:.2f} ms; "
        f"target 5 ms: {per / 5:.3f} of it)",
        f"one task due per tick (cron, p50 of 200): {p50:.3f} ms (target 5 ms: "
        f"{p50 / 5:.3f} of it)",
    ]


async def _loop_cpu(seconds: float, body: object) -> float:
    task = asyncio.create_task(body)  # type: ignore[arg-type]
    await asyncio.sleep(0.5)  # let it settle (first reload) before the window
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return cpu / wall


async def _noop_loop() -> None:
    while True:
        await asyncio.sleep(1.0)


def idle(n: int, seconds: float, home: Path) -> list[str]:
    store = TaskStore(home / "idle")
    fill(store, n, time.time(), every="12h", cron="0 3 1 1 *")  # none due in the window
    sched = Scheduler(store, NoopStarter())
    base = asyncio.run(_loop_cpu(seconds, _noop_loop()))
    busy = asyncio.run(_loop_cpu(seconds, sched.serve()))
    store.close()
    added = max(0.0, busy - base) * 100
    return [
        f"idle with {n} tasks scheduled, {seconds:g} s window: scheduler loop "
        f"{busy * 100:.4f}% of one core, no-op loop baseline {base * 100:.4f}%, added "
        f"{added:.4f}% (target 1%: {added / 1:.4f} of it; ratio to baseline "
        f"{busy / base if base else float('inf'):.2f}x)",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        lines = per_due(args.tasks, home) + idle(args.tasks, args.idle_s, home)
    text = "\n".join(["bench/tasks.py: the task scheduler (no-op run engine, real SQLite)",
                      *lines]) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

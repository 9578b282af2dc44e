"""A run starter that records what it is asked to start (unit tests of the scheduler's logic)."""

from __future__ import annotations

from bastion.tasks.spec import TaskSpec, Trigger


class RecordingStarter:
    """Keeps ``(spec, trigger)`` per start; ``busy`` holds the owners of runs still going."""

    def __init__(self) -> None:
        self.started: list[tuple[TaskSpec, Trigger]] = []
        self.busy: list[str] = []
        self.keep_running = False  # True: every started run stays "going" (limits tests)

    def start(self, spec: TaskSpec, trigger: Trigger) -> str:
        self.started.append((spec, trigger))
        if self.keep_running:
            self.busy.append(spec.owner)
        return f"run-{len(self.started)}"

    def active(self, owner: str | None = None) -> int:
        return sum(1 for o in self.busy if owner is None or o == owner)

    def names(self) -> list[str]:
        return [s.name for s, _ in self.started]

"""The scheduler's logic on a fake clock, with a real SQLite task store and a recording starter."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import ConfigError, NotFoundError
from bastion.tasks.scheduler import Limits, Scheduler, watched_folder
from bastion.tasks.spec import Schedule, TaskLimitError, TaskSpec, Trigger
from bastion.tasks.store import TaskStore
from tests.fakes.run_starter import RecordingStarter

T0 = 1_780_000_000.0  # a fixed "now" (2026-05-28)


def task(name: str, schedule: Schedule, owner: str = "alice", **kw: object) -> TaskSpec:
    return TaskSpec(name=name, owner=owner, prompt="do it", schedule=schedule,
                    **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    s = TaskStore(tmp_path)
    yield s  # type: ignore[misc]
    s.close()


def test_every_task_fires_on_its_times_and_never_twice(store: TaskStore) -> None:
    store.add(task("poll", Schedule("every", "15m")), now=T0)
    starter = RecordingStarter()
    sched = Scheduler(store, starter)
    assert sched.tick(T0 + 899) == []
    assert sched.wait_s(T0 + 899) == 1.0
    assert sched.tick(T0 + 900) == ["run-1"]
    assert sched.tick(T0 + 901) == []  # handled: not again
    assert sched.tick(T0 + 1800.2) == ["run-2"]
    trig = starter.started[1][1]
    assert (trig.kind, trig.fired_at) == ("every", T0 + 1800)
    fires = store.fires(store.get("alice", "poll").id)
    assert [f.run_id for f in fires] == ["run-2", "run-1"]


def test_a_restart_runs_missed_fires_once_or_skips_them(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.add(task("once", Schedule("every", "10m")), now=T0)
    store.add(task("skipper", Schedule("every", "10m"), missed="skip"), now=T0)
    Scheduler(store, RecordingStarter()).tick(T0 + 600)  # both fire once, then "bastion stops"
    store.close()
    store = TaskStore(tmp_path)  # ten hours later, a new process
    starter = RecordingStarter()
    sched = Scheduler(store, starter)
    sched.tick(T0 + 600 + 36_000 + 300)
    assert starter.names() == ["once"]
    assert "missed" in starter.started[0][1].detail
    assert sched.tick(T0 + 600 + 36_000 + 360) == []  # no burst of the 60 missed fire times
    skipped = store.fires(store.get("alice", "skipper").id)[0]
    assert skipped.run_id is None and skipped.error == "skipped (missed: skip)"
    sched.tick(T0 + 600 + 36_600 + 1)  # the next on-time fire of both
    assert sorted(starter.names()) == ["once", "once", "skipper"]
    store.close()


def test_changes_in_the_store_are_picked_up_without_a_restart(store: TaskStore) -> None:
    starter = RecordingStarter()
    sched = Scheduler(store, starter)
    sched.tick(T0)
    store.add(task("late", Schedule("every", "1m")), now=T0)
    sched.tick(T0 + 60)
    assert starter.names() == ["late"]
    store.set_paused("alice", "late", True, now=T0 + 61)
    sched.tick(T0 + 600)
    assert starter.names() == ["late"]  # paused: nothing
    store.set_paused("alice", "late", False, now=T0 + 601)
    sched.tick(T0 + 602)
    assert starter.names() == ["late"]  # resuming does not catch up what fell due while paused
    sched.tick(T0 + 661)
    assert starter.names() == ["late", "late"]
    store.remove("alice", "late")
    sched.tick(T0 + 800)
    assert starter.names() == ["late", "late"]


def test_queued_run_now_fires_are_started_on_the_next_tick(store: TaskStore) -> None:
    stored, _ = store.add(task("manual", Schedule("manual")), now=T0)
    fire_id = store.queue_fire(stored.id, Trigger("manual", T0, "bastion task run-now"))
    starter = RecordingStarter()
    assert Scheduler(store, starter).tick(T0 + 1) == ["run-1"]
    fire = store.fire(fire_id)
    assert fire is not None and fire.run_id == "run-1" and not fire.queued
    assert store.queued() == []


def test_concurrency_limits_global_and_per_user(store: TaskStore) -> None:
    starter = RecordingStarter()
    starter.keep_running = True
    sched = Scheduler(store, starter, limits=Limits(total=3, per_user=2))
    a = [store.add(task(f"a{i}", Schedule("manual")), now=T0)[0] for i in range(3)]
    b = [store.add(task(f"b{i}", Schedule("manual"), owner="bob"), now=T0)[0] for i in range(2)]
    sched.start(a[0], Trigger("manual", T0))
    sched.start(a[1], Trigger("manual", T0))
    with pytest.raises(TaskLimitError, match="per user is 2"):
        sched.start(a[2], Trigger("manual", T0))
    sched.start(b[0], Trigger("manual", T0))
    with pytest.raises(TaskLimitError, match="all users is 3") as err:
        sched.start(b[1], Trigger("manual", T0))
    assert "tasks.max_concurrent" in (err.value.fix or "")
    # a clock fire over the limit is refused and recorded, not raised
    store.queue_fire(b[1].id, Trigger("manual", T0))
    assert sched.tick(T0) == []
    assert "all users is 3" in (store.fires(b[1].id)[0].error or "")
    starter.busy.clear()
    assert sched.start(b[1], Trigger("manual", T0)) == "run-4"


def test_no_engine_is_a_clear_refusal(store: TaskStore) -> None:
    stored, _ = store.add(task("x", Schedule("manual")), now=T0)
    with pytest.raises(TaskLimitError, match="no run engine"):
        Scheduler(store, None).start(stored, Trigger("manual", T0))


def test_an_engine_bug_does_not_stop_the_scheduler(store: TaskStore) -> None:
    class Broken(RecordingStarter):
        def start(self, spec: TaskSpec, trigger: Trigger) -> str:
            if spec.name == "bad":
                raise RuntimeError("boom")
            return super().start(spec, trigger)

    store.add(task("bad", Schedule("every", "1m")), now=T0)
    store.add(task("good", Schedule("every", "1m")), now=T0)
    starter = Broken()
    Scheduler(store, starter).tick(T0 + 60)
    assert starter.names() == ["good"]
    assert store.fires(store.get("alice", "bad").id)[0].error == "internal error: RuntimeError"


def test_store_names_unique_per_owner_and_other_owners_invisible(store: TaskStore) -> None:
    store.add(task("daily", Schedule("cron", "0 7 * * *")), now=T0)
    store.add(task("daily", Schedule("cron", "0 8 * * *"), owner="bob"), now=T0)
    with pytest.raises(ConfigError, match="already has a task named"):
        store.add(task("daily", Schedule("every", "1h")), now=T0)
    assert [t.spec.owner for t in store.list_tasks()] == ["alice", "bob"]
    assert [t.spec.schedule.expr for t in store.list_tasks("bob")] == ["0 8 * * *"]
    with pytest.raises(NotFoundError):
        store.get("carol", "daily")


def test_webhook_secrets_are_not_stored_and_nonces_survive_a_restart(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    stored, secret = store.add(task("hook", Schedule("webhook")), now=T0)
    assert secret is not None and secret.startswith("whsec_")
    assert secret.encode() not in (tmp_path / "tasks.db").read_bytes()
    assert store.secret(stored) == secret
    assert store.use_nonce(stored.id, "n1", T0, 300)
    store.close()
    store = TaskStore(tmp_path)
    assert not store.use_nonce(stored.id, "n1", T0 + 10, 300)  # replay after a restart
    rotated = store.rotate_secret("alice", "hook")
    assert rotated != secret and store.secret(store.get("alice", "hook")) == rotated
    assert (tmp_path / "tasks.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tasks.db").stat().st_mode & 0o777 == 0o600
    store.close()


def test_watched_folder_stays_in_the_workspace(tmp_path: Path) -> None:
    assert watched_folder(tmp_path, "inbox") == (tmp_path / "inbox").resolve()
    for bad in ["../outside", "/etc", "inbox/../../x"]:
        with pytest.raises(ConfigError, match="outside the workspace"):
            watched_folder(tmp_path, bad)


def test_a_crash_while_starting_never_fires_twice(tmp_path: Path) -> None:
    class Crashing(RecordingStarter):
        def start(self, spec: TaskSpec, trigger: Trigger) -> str:
            super().start(spec, trigger)  # the engine recorded the run, then bastion died
            raise SystemExit("killed")

    store = TaskStore(tmp_path)
    store.add(task("poll", Schedule("every", "10m")), now=T0)
    crashing = Crashing()
    with pytest.raises(SystemExit):
        Scheduler(store, crashing).tick(T0 + 600)
    store.close()
    store = TaskStore(tmp_path)  # restarted
    starter = RecordingStarter()
    Scheduler(store, starter).tick(T0 + 601)
    assert len(crashing.started) == 1 and starter.started == []  # at most once
    store.close()

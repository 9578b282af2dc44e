"""``bastion task add|list|show|pause|resume|rm|run-now|secret``: unattended tasks.

The commands work on ``HOME/tasks.db`` directly, like ``bastion users``: a running ``bastion
serve`` picks every change up within a second, no restart. The local CLI acts as the machine's
owner (user ``admin``); ``--user NAME`` manages another user's tasks. ``run-now`` queues a fire
that the server's scheduler starts on its next tick (and prints the run id once it has).
"""

from __future__ import annotations

import json
import time
from contextlib import closing
from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import out_console
from bastion.cli._options import JsonOpt
from bastion.errors import ConfigError
from bastion.security.identity import ADMIN_OWNER
from bastion.tasks.schedule import next_fire
from bastion.tasks.spec import (
    AutoApprove,
    NotifyTarget,
    Schedule,
    ScheduleKind,
    TaskPolicy,
    TaskSpec,
    Trigger,
    parse_duration,
)
from bastion.tasks.store import StoredTask, TaskStore, open_store
from bastion.tools.base import Risk

console = out_console()
task_app = typer.Typer(help="Unattended tasks: schedules and triggers that run the agent "
                            "while you are away.", no_args_is_help=True)

UserOpt = Annotated[str, typer.Option("--user", "-u", help="whose tasks (default: admin, the "
                                                            "machine's owner)")]
WAIT_S = 5.0


def _store() -> closing[TaskStore]:
    """Open the store for one command; closed when the ``with`` block ends."""
    return closing(open_store())


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _schedule(cron: str | None, every: str | None, at: str | None, webhook: bool,
              watch: str | None) -> Schedule:
    given: tuple[tuple[ScheduleKind, str | None], ...] = (
        ("cron", cron), ("every", every), ("at", at), ("file", watch))
    chosen = [(k, v) for k, v in given if v is not None]
    if webhook:
        chosen.append(("webhook", ""))
    if len(chosen) > 1:
        raise ConfigError("give one of --cron, --every, --at, --webhook, --watch",
                          fix="one task has one schedule; add a second task for another")
    kind, expr = chosen[0] if chosen else ("manual", "")
    return Schedule(kind, expr)


def _rule(text: str) -> AutoApprove:
    tool, _, risk = text.partition(":")
    try:
        level = Risk.parse(risk or "medium")
    except KeyError as exc:
        raise ConfigError(f"unknown risk {risk!r} in --auto-approve {text}",
                          fix="write TOOL or TOOL:low|medium|high") from exc
    return AutoApprove(tool, level)


def _next(task: StoredTask) -> float | None:
    spec = task.spec
    if spec.paused or not spec.schedule.clock:
        return None
    mark = task.created_at if task.last_fire is None else task.last_fire
    return next_fire(spec.schedule, spec.tz, mark)


def _show(task: StoredTask) -> dict[str, object]:
    return {**task.spec.to_dict(), "created_at": task.created_at, "last_fire": task.last_fire,
            "next_fire": _next(task), "policy_hash": task.spec.policy.digest()}


@task_app.command("add")
def add_cmd(
    name: Annotated[str, typer.Argument(help="the task's name (unique per user)")],
    prompt: Annotated[str, typer.Argument(help="what the agent is asked on each run")],
    cron: Annotated[str | None, typer.Option("--cron", help='cron line, e.g. "0 7 * * *"')]
    = None,
    every: Annotated[str | None, typer.Option("--every", help="interval, e.g. 15m, 2h")] = None,
    at: Annotated[str | None, typer.Option("--at", help="once, at an ISO time")] = None,
    webhook: Annotated[bool, typer.Option(
        "--webhook", help="fired by a signed POST /v1/tasks/NAME/trigger")] = False,
    watch: Annotated[str | None, typer.Option(
        "--watch", help="fired by a new file in this workspace folder")] = None,
    tz: Annotated[str, typer.Option("--tz", help="time zone of --cron/--at")] = "UTC",
    tools: Annotated[str | None, typer.Option(
        "--tools", help="allowed tools, comma-separated globs (default: the user's)")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1)] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1)] = None,
    budget: Annotated[str | None, typer.Option(
        "--budget", help="wall-clock budget of a run, e.g. 10m")] = None,
    egress: Annotated[str | None, typer.Option(
        "--egress", help="allowed domains, comma-separated")] = None,
    deadline: Annotated[str, typer.Option(
        "--approval-deadline", help="a call waiting for approval is denied after this")] = "1h",
    auto_approve: Annotated[list[str] | None, typer.Option(
        "--auto-approve", help="TOOL[:low|medium|high], repeatable; never CRITICAL")] = None,
    notify: Annotated[list[str] | None, typer.Option(
        "--notify", help="https://hook, ntfy:https://ntfy.sh/topic or mailto:you@host; "
                         "repeatable")] = None,
    missed: Annotated[str, typer.Option(
        "--missed", help="fires missed while bastion was down: run_once or skip")] = "run_once",
    paused: Annotated[bool, typer.Option("--paused", help="add it paused")] = False,
    user: UserOpt = ADMIN_OWNER,
) -> None:
    """Add a task; a --webhook task's secret is printed once, on stdout."""
    from bastion.app import workspace_dir
    from bastion.config.loader import load
    from bastion.tasks.scheduler import check_new

    policy = TaskPolicy(
        tools=None if tools is None else tuple(tools.split(",")), max_steps=max_steps,
        max_tokens=max_tokens,
        wall_clock_s=None if budget is None else parse_duration(budget, what="budget"),
        egress=None if egress is None else tuple(egress.split(",")),
        approval_deadline_s=parse_duration(deadline, what="approval deadline"),
        auto_approve=tuple(_rule(r) for r in auto_approve or ()))
    spec = TaskSpec(name=name, owner=user, prompt=prompt,
                    schedule=_schedule(cron, every, at, webhook, watch), tz=tz, policy=policy,
                    notify=tuple(NotifyTarget.parse(n) for n in notify or ()),
                    missed=missed, paused=paused)  # type: ignore[arg-type]
    check_new(spec, now=time.time(), workspace=workspace_dir(load()))
    if user != ADMIN_OWNER:  # a run acts as its owner: the owner must exist
        from bastion.security.keystore import open_store as open_keys

        keys = open_keys()
        try:
            keys.user(user)
        finally:
            keys.close()
    with _store() as s:
        task, secret = s.add(spec)
    if secret is not None:
        typer.echo(secret)
        typer.echo(f"task {name} added; the line above is its webhook secret, shown once: "
                   f"sign POST /v1/tasks/{name}/trigger with it", err=True)
        return
    nxt = _next(task)
    what = f"{spec.schedule.kind} {spec.schedule.expr}".strip()
    typer.echo(f"task {name} added ({what})" + (f"; next run {_when(nxt)}" if nxt else ""))


@task_app.command("list")
def list_cmd(user: UserOpt = ADMIN_OWNER, all_users: Annotated[bool, typer.Option(
        "--all", help="every user's tasks")] = False, as_json: JsonOpt = False) -> None:
    """List tasks with their schedule and next run."""
    with _store() as s:
        tasks = s.list_tasks(None if all_users else user)
    if as_json:
        typer.echo(json.dumps([_show(t) for t in tasks], indent=2))
        return
    table = Table("name", "owner", "schedule", "next run", "state")
    for t in tasks:
        sched = f"{t.spec.schedule.kind} {t.spec.schedule.expr}".strip()
        table.add_row(escape(t.spec.name), escape(t.spec.owner), escape(sched),
                      _when(_next(t)), "paused" if t.spec.paused else "active")
    console.print(table)


@task_app.command("show")
def show_cmd(name: str, user: UserOpt = ADMIN_OWNER, as_json: JsonOpt = False) -> None:
    """Show a task and its latest fires (run ids, or why no run started)."""
    with _store() as s:
        task = s.get(user, name)
        fires = s.fires(task.id)
    data = _show(task)
    data["fires"] = [{"kind": f.trigger.kind, "fired_at": f.trigger.fired_at,
                      "detail": f.trigger.detail, "run_id": f.run_id, "error": f.error,
                      "queued": f.queued} for f in fires]
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for key in ("name", "owner", "prompt", "tz", "missed", "paused", "notify", "policy_hash"):
        typer.echo(f"{key}: {escape(str(data[key]))}")
    typer.echo(f"schedule: {task.spec.schedule.kind} {task.spec.schedule.expr}".rstrip())
    typer.echo(f"next run: {_when(_next(task))}")
    typer.echo(f"policy: {json.dumps(task.spec.policy.to_dict())}")
    for f in fires:
        outcome = f"run {f.run_id}" if f.run_id else ("queued" if f.queued else f.error)
        typer.echo(f"  {_when(f.trigger.fired_at)}  {f.trigger.kind:8} {outcome}  "
                   f"{f.trigger.detail}")


@task_app.command("runs")
def runs_cmd(name: str, user: UserOpt = ADMIN_OWNER, as_json: JsonOpt = False) -> None:
    """List the task's runs with their ids, status and reason (newest first)."""
    from bastion.cli.run import runs_table

    runs_table(name, as_json, owner=user)


@task_app.command("pause")
def pause_cmd(name: str, user: UserOpt = ADMIN_OWNER) -> None:
    """Stop firing a task until it is resumed."""
    with _store() as s:
        s.set_paused(user, name, True)
    typer.echo(f"task {name} paused")


@task_app.command("resume")
def resume_cmd(name: str, user: UserOpt = ADMIN_OWNER) -> None:
    """Fire a task again from now on (what fell due while paused does not run)."""
    with _store() as s:
        task = s.set_paused(user, name, False)
    nxt = _next(task)
    typer.echo(f"task {name} resumed" + (f"; next run {_when(nxt)}" if nxt else ""))


@task_app.command("rm")
def rm_cmd(name: str, user: UserOpt = ADMIN_OWNER) -> None:
    """Remove a task (its fire record and webhook secret with it)."""
    with _store() as s:
        s.remove(user, name)
    typer.echo(f"task {name} removed")


@task_app.command("run-now")
def run_now_cmd(name: str, user: UserOpt = ADMIN_OWNER) -> None:
    """Start a run now: bastion serve's scheduler starts it within a second."""
    with _store() as s:
        task = s.get(user, name)
        fire_id = s.queue_fire(task.id, Trigger("manual", time.time(), "bastion task run-now"))
        end = time.monotonic() + WAIT_S
        fire = s.fire(fire_id)
        while fire is not None and fire.queued and time.monotonic() < end:
            time.sleep(0.1)
            fire = s.fire(fire_id)
    if fire is not None and fire.run_id:
        typer.echo(fire.run_id)
        typer.echo(f"task {name}: run {fire.run_id} started", err=True)
    elif fire is not None and fire.error:
        raise ConfigError(f"task {name} did not start: {fire.error}",
                          fix="see bastion task show " + name)
    else:
        typer.echo(f"task {name}: queued; bastion serve starts it (is it running?)", err=True)


@task_app.command("secret")
def secret_cmd(name: str, rotate: Annotated[bool, typer.Option(
        "--rotate", help="draw a new secret; the old one stops working")] = False,
        user: UserOpt = ADMIN_OWNER) -> None:
    """Replace a webhook task's secret (printed once; secrets are never shown again)."""
    if not rotate:
        raise ConfigError("a webhook secret is shown only when it is made",
                          fix=f"bastion task secret {name} --rotate")
    with _store() as s:
        secret = s.rotate_secret(user, name)
    typer.echo(secret)
    typer.echo(f"task {name}: new webhook secret above, shown once", err=True)


def register(app: typer.Typer) -> None:
    """Add ``bastion task`` to the CLI."""
    app.add_typer(task_app, name="task")

"""``bastion run list|receipt|verify``: unattended runs, their signed receipts, offline checks.

These read the run store and the audit log on disk, so they work beside a running
``bastion serve`` and without one; ``verify`` needs nothing but the receipt file and the
audit database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.errors import BastionError, NotFoundError

run_app = typer.Typer(help="Unattended runs: list them, write and verify signed receipts.",
                      no_args_is_help=True)


def _store() -> Any:
    from bastion.config import paths
    from bastion.tasks.park import open_store

    return open_store(paths.home())


def runs_table(task: str | None, as_json: bool, owner: str | None = None) -> None:
    """Print the runs of ``task`` (all tasks: ``None``) of ``owner`` (all: ``None``)."""
    store = _store()
    try:
        runs = [r.summary() for r in store.runs(task=task, owner=owner, limit=1000)]
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"runs": runs}))
        return
    if not runs:
        typer.echo(f"no runs{f' of task {task}' if task else ''}")
        return
    for r in runs:
        why = f"  {r['reason']}" if r["reason"] else ""
        typer.echo(f"{r['id']}  {r['task']:<20} {r['owner']:<12} {r['status']:<8} "
                   f"steps {r['steps']:<3} tokens {r['tokens']:<6}{why}")


@run_app.command("list")
def list_runs(
    task: Annotated[str | None, typer.Option("--task", help="only this task's runs")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List runs with their ids, newest first."""
    runs_table(task, as_json)


@run_app.command("receipt")
def receipt(
    run_id: Annotated[str, typer.Argument(help="the run's id (bastion run list)")],
    out: Annotated[Path, typer.Option("-o", "--output", help="file to write (JSON)")],
) -> None:
    """Write a finished run's signed receipt to a file."""
    store = _store()
    try:
        run = store.get(run_id)
    finally:
        store.close()
    if run is None:
        raise NotFoundError(f"no run {run_id}", fix="list the runs: bastion run list")
    if run.receipt is None:
        raise BastionError(f"run {run_id} has no receipt yet (it is {run.status})",
                           fix="a receipt is written when the run ends; try again then")
    out.write_text(json.dumps(run.receipt, indent=1, ensure_ascii=False) + "\n")
    typer.echo(f"wrote the receipt of run {run_id} to {out}")


@run_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="a receipt written by bastion run receipt")],
    db: Annotated[Path | None, typer.Option("--db", help="the audit database "
                                            "(default: this home's)")] = None,
    fingerprint: Annotated[list[str] | None, typer.Option(
        "--fingerprint", help="trusted key fingerprint (default: audit.key_fingerprints); "
                              "repeat")] = None,
) -> None:
    """Check a receipt offline: its signature, the audit chain, and that they agree."""
    from bastion.security.setup import audit_path
    from bastion.tasks.receipt import verify_receipt

    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise BastionError(f"cannot read the receipt {file}: {exc}",
                           fix="pass the JSON file bastion run receipt wrote") from exc
    if not isinstance(data, dict):
        raise BastionError(f"{file} is not a receipt", fix="pass the file bastion run receipt "
                                                           "wrote")
    path = db or audit_path()
    if not path.exists():
        raise NotFoundError(f"no audit log at {path}", fix="pass --db with the audit database")
    pins = list(fingerprint or [])
    if not pins:
        from bastion.config.loader import load

        pins = list(load().audit.key_fingerprints)  # pinned at init, outside the audit dir
    check = verify_receipt(data, path, pins)
    typer.echo(check.line)
    if not check.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``bastion run ...``."""
    app.add_typer(run_app, name="run")

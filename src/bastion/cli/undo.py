"""``bastion undo [N] [--session S] [--dry-run] [--list]``: put the workspace back.

Restores the paths that the last N mutating tool calls of a session changed to their state
before those calls (see :mod:`bastion.security.undo`). It needs no model: it opens the
undo store and the audit log only, so it works beside a running ``bastion serve``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from bastion.cli._sessions import pick_key
from bastion.security.undo import CallChanges

_HELP = "Undo what the last N tool calls of a session changed in the workspace."


def _safe(line: str) -> str:
    """Show control characters in file names escaped (no terminal escapes from the sandbox)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)


def _print_calls(calls: list[CallChanges], session: str | None) -> None:
    if not calls:
        typer.echo(f"nothing to undo in session {session or '(none)'}")
        return
    typer.echo(f"session {_safe(session or '(none)')}: {len(calls)} call(s) can be undone, "
               "newest first")
    for n, call in enumerate(calls, 1):
        typer.echo(_safe(f"{n}. {call.headline()}"))
        for change in call.changes:
            typer.echo(_safe("     " + change.line()))


def undo(
    n: Annotated[int, typer.Argument(min=1, help="how many calls to undo, newest first")] = 1,
    session: Annotated[str | None, typer.Option(
        "--session", help="session id (default: the session of the newest undoable call)")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="show what would be restored; change nothing")] = False,
    list_: Annotated[bool, typer.Option(
        "--list", help="list the session's undoable calls with what each changed")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Restore the workspace to before the last N tool calls of a session."""
    from bastion.app import workspace_dir
    from bastion.config.loader import load
    from bastion.security.undo import open_store

    config = load()
    store = open_store(config, workspace_dir(config))
    try:
        label = session
        if session is None:
            session = label = store.last_session()
        else:  # a name or an id; undo records carry the stored id
            session = pick_key(session, lambda key: bool(store.calls(key, 1)))
        if list_:
            calls = store.calls(session)
            if as_json:
                typer.echo(json.dumps({"session_id": session,
                                       "calls": [c.to_dict() for c in calls]}))
            else:
                _print_calls(calls, label)
            return
        from bastion.security.redact import Redactor
        from bastion.security.setup import build_audit

        audit = build_audit(config, Redactor())
        try:
            report = store.undo(session, n, dry_run=dry_run, audit=audit, actor="cli")
        finally:
            audit.close()
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        for line in report.lines():
            typer.echo(_safe(line))
    if report.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``bastion undo`` to the CLI."""
    app.command("undo", help=_HELP)(undo)

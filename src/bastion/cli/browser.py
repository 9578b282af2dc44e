"""``bastion browser sessions|close``: the running server's browser sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from bastion.cli._console import out_console
from bastion.cli._options import JsonOpt
from bastion.cli._options import load_config as _config
from bastion.errors import BastionError

if TYPE_CHECKING:
    from bastion.client import BastionClient

browser_app = typer.Typer(help="Browser sessions of the running server.", no_args_is_help=True)


def _client() -> BastionClient:
    from bastion.client import BastionClient

    return BastionClient.from_config(_config())


@browser_app.command("sessions")
def sessions(as_json: JsonOpt = False) -> None:
    """List open browser sessions: page, actions, idle time, logged-in sites."""
    with _client() as api:
        data = api.browser_sessions()
    if as_json:
        typer.echo(data.model_dump_json(indent=2))
        return
    if not data.enabled:
        if _config().browser.enabled:  # the file says on; the server started before that
            raise BastionError("the running server has the browser off: it started before "
                               "browser.enabled was set to true",
                               fix="restart bastion serve")
        typer.echo("the browser is disabled (browser.enabled: false)")
        return
    table = Table("session", "url", "actions", "idle s", "logged in")
    for s in data.sessions:
        table.add_row(str(s["session_id"]), str(s["url"]), str(s["actions"]), str(s["idle_s"]),
                      ", ".join(s["logged_in"]) or "-")
    out_console().print(table)
    sandbox = "bubblewrap" if data.sandboxed else (
        "not started yet" if data.sandboxed is None
        else f"NOT sandboxed ({data.sandbox_problem})")
    typer.echo(f"{len(data.sessions)} open; chromium: {sandbox}")


@browser_app.command("close")
def close(session: Annotated[str, typer.Argument(help="the agent session id")]) -> None:
    """Close one session's browser (its cookies and logins are discarded)."""
    with _client() as api:
        api.close_browser_session(session)
    typer.echo(f"closed the browser session of {session}")


def register(app: typer.Typer) -> None:
    """Add ``bastion browser ...``."""
    app.add_typer(browser_app, name="browser")

"""The ``bastion`` command. Each command group lives in its own module with ``register(app)``."""

from __future__ import annotations

import importlib
import sys

import typer

from bastion.errors import BastionError

app = typer.Typer(
    name="bastion",
    help="bastion: a self-hosted, security-first agent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules; each defines ``register(app: typer.Typer) -> None``. Add one line per module.
COMMAND_MODULES = [
    "bastion.cli.cluster",  # cluster status|add|remove|drain|resume|metrics, node serve
    "bastion.cli.core",  # init, doctor, config, ask, chat, serve
    "bastion.cli.serve",  # serve (the REST API)
    "bastion.cli.memory",  # sessions, search, ingest, knowledge
    "bastion.cli.mcp",  # mcp serve|list|tools|call
    "bastion.cli.gateway",  # gateway serve (the tool gateway as its own process)
    "bastion.cli.sandbox",  # sandbox status|run|ls|kill
    "bastion.cli.voice",  # voice (push-to-talk, --input/--output), transcribe, say, wyoming
    "bastion.cli.audit",  # audit events|tools|security|stats|export|verify
    "bastion.cli.secrets",  # secrets set|get|list|rm|recipient
    "bastion.cli.privacy",  # privacy scan (PII and the routing decision)
    "bastion.cli.crypto",  # crypto hsm|seal|unseal|lock|split|combine|mpc-sum; audit prove
    "bastion.cli.intel",  # intel status|train|check|trust|report|feeds|siem|alerts
    "bastion.cli.browser",  # browser sessions|close (the server's browser sessions)
    "bastion.cli.undo",  # undo [N] --session --dry-run --list (workspace snapshots)
]


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a module not written yet; the rest still work
                continue
            raise
        module.register(app)


def main() -> None:
    """Entry point: run the CLI, turning bastion errors into one clear line and exit code 1."""
    _load_commands()
    try:
        code = app(standalone_mode=False)  # typer.Exit(n) comes back as n here
    except BastionError as exc:
        typer.secho(f"error: {exc.user_text()}", err=True, fg="red")
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors etc.
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()

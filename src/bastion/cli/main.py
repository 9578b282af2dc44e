"""The ``bastion`` command. Each command group lives in its own module with ``register(app)``."""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from bastion.cli._terminal import visible
from bastion.errors import BastionError

app = typer.Typer(
    name="bastion",
    help="bastion: a self-hosted, security-first agent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
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
    "bastion.cli.model",  # model pull|list|show|rm|use|verify (GGUF models, manifests)
    "bastion.cli.run",  # run list|receipt|verify (unattended runs, signed receipts)
    "bastion.cli.users",  # users add|list|disable|rm|roles, keys create|list|revoke|rotate
    "bastion.cli.tasks",  # task add|list|show|pause|resume|rm|run-now|secret
]

# Which modules register each top-level command: ``bastion NAME ...`` imports only those (about
# 0.45 s of CPU less per command than importing all of them). A name not listed here, no name,
# or a command the subset does not have ("No such command") loads every module, so this table
# only has to be right, not complete; tests/unit/cli/test_lazy_commands.py checks it.
COMMAND_OWNERS: dict[str, tuple[str, ...]] = {
    "init": ("bastion.cli.core",), "doctor": ("bastion.cli.core",),
    "config": ("bastion.cli.core",), "ask": ("bastion.cli.core",),
    "chat": ("bastion.cli.core",), "serve": ("bastion.cli.serve",),
    "sessions": ("bastion.cli.memory",), "knowledge": ("bastion.cli.memory",),
    "search": ("bastion.cli.memory",), "ingest": ("bastion.cli.memory",),
    "cluster": ("bastion.cli.cluster",), "node": ("bastion.cli.cluster",),
    "mcp": ("bastion.cli.mcp",), "gateway": ("bastion.cli.gateway",),
    "sandbox": ("bastion.cli.sandbox",), "voice": ("bastion.cli.voice",),
    "audit": ("bastion.cli.audit",), "secrets": ("bastion.cli.secrets",),
    "privacy": ("bastion.cli.privacy",), "crypto": ("bastion.cli.crypto",),
    "intel": ("bastion.cli.intel",), "browser": ("bastion.cli.browser",),
    "undo": ("bastion.cli.undo",), "model": ("bastion.cli.model",),
    "run": ("bastion.cli.run",), "users": ("bastion.cli.users",),
    "keys": ("bastion.cli.users",), "task": ("bastion.cli.tasks",),
}


def _show_version(value: bool) -> None:
    if value:
        from bastion import __version__

        typer.echo(f"bastion {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_show_version, help="print the version and exit")]
    = False,
) -> None:
    """bastion: a self-hosted, security-first agent."""


def _load_commands(names: Sequence[str] | None = None) -> None:
    """Register the groups of ``names`` (default: every module in :data:`COMMAND_MODULES`).

    A listed module that is missing or fails to import is an error, never a silent skip (a
    typo would quietly remove a command group).
    """
    for name in COMMAND_MODULES if names is None else names:
        importlib.import_module(name).register(app)


def _modules_for(args: Sequence[str]) -> list[str]:
    """Return the modules ``bastion ARGS`` needs: its command's owners, else all of them."""
    owners = COMMAND_OWNERS.get(args[0]) if args else None
    if owners is None or not set(owners) <= set(COMMAND_MODULES):
        return list(COMMAND_MODULES)
    return [m for m in COMMAND_MODULES if m in owners]  # in the listed (help) order


def _fail(message: str, fix: str | None, code: int) -> None:
    text = f"error: {message} (fix: {fix})" if fix else f"error: {message}"
    typer.secho(text, err=True, fg="red")
    sys.exit(code)


def _usage_fix(exc: typer.TyperException) -> str:
    """Return the help command of the (sub)command a usage error happened in."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "bastion"
    return f"{path} --help"


def main() -> None:
    """Entry point: run the CLI; every mistake is one line (``error: ... (fix: ...)``).

    Exit codes: 1 for bastion's own errors, 2 for usage errors (unknown command or option,
    bad value), 130 for Ctrl-C. Only a bug in bastion itself may show a traceback, and only
    with ``BASTION_DEBUG=1``.
    """
    from bastion.config import paths

    paths.private_umask()  # files bastion creates (audit, memory, workspace ...) are 0600
    loaded = _modules_for(sys.argv[1:])
    _load_commands(loaded)
    try:
        try:
            code = app(prog_name="bastion", standalone_mode=False)  # typer.Exit(n) returns n
        except typer.TyperException as exc:
            if len(loaded) == len(COMMAND_MODULES) or "No such command" not in str(exc):
                raise
            _load_commands([m for m in COMMAND_MODULES if m not in loaded])  # the table is old
            code = app(prog_name="bastion", standalone_mode=False)
    except BastionError as exc:
        # a tool's or model's words can be in the message: no control sequences reach the tty
        typer.secho(f"error: {visible(exc.user_text())}", err=True, fg="red")
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail("aborted: no answer was given", "answer the prompt, or pass --yes where the "
              "command has it", 1)
    except typer.TyperException as exc:  # typer's (vendored) click usage and file errors
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
            exc.show()  # type: ignore[attr-defined]
            sys.exit(2)
        message = " ".join(exc.format_message().split())
        _fail(message.rstrip("."), _usage_fix(exc), exc.exit_code)
    except (OSError, sqlite3.Error, UnicodeDecodeError) as exc:
        # a path the user named that is missing, a directory, unreadable, or not a database
        if os.environ.get("BASTION_DEBUG"):
            raise
        named = isinstance(exc, OSError) and exc.filename is not None
        _fail(_os_message(exc), "check that path and its permissions" if named else
              "run it again with BASTION_DEBUG=1 to see where it failed, and report it", 1)
    if isinstance(code, int) and code:
        sys.exit(code)


def _os_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    if isinstance(exc, sqlite3.Error):
        return f"cannot read the database: {exc}"
    if isinstance(exc, UnicodeDecodeError):
        return "the file is not UTF-8 text"
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    main()

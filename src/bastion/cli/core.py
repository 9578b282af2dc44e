"""Core commands: ``init``, ``doctor``, ``config show|get|set``, ``ask``, ``chat``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import model_notes, out_console, progress
from bastion.cli._render import EventRenderer, Transcript
from bastion.cli.approval import choose_approver
from bastion.config import paths
from bastion.config.loader import dump, get_key, load, read_raw, save, set_key, validate
from bastion.errors import BastionError, ConfigError

if TYPE_CHECKING:
    from bastion.app import App
    from bastion.hardware import Recommendation

_err = Console(stderr=True, highlight=False)
_out = out_console(highlight=False)

SessionOpt = Annotated[
    str | None, typer.Option("--session", "-s", help="conversation id; reuse it to continue")
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="approve every risky tool call without asking")
]


def _build(yes: bool, *, ephemeral: bool = False) -> App:
    """Load the config and assemble the app (the one composition root).

    ``ephemeral``: the conversation is kept in memory only (nothing stored, nothing indexed).
    """
    from bastion.app import build_app
    from bastion.memory.base import EphemeralMemory

    config = load()
    if config.model.backend == "embedded":
        progress(f"loading the model {config.model.name} ...")
    app = build_app(config, approver=choose_approver(yes=yes),
                    memory=EphemeralMemory() if ephemeral else None)
    model_notes(app.model)
    return app


# -- init -------------------------------------------------------------------------------------
def init(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="never prompt")] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing config")] = False,
    rotate_token: Annotated[bool, typer.Option(
        "--rotate-token", help="with --force: make a new API token (clients need the new one)")]
    = False,
    pull: Annotated[bool, typer.Option(
        "--pull", help="also download the recommended model (verified) and use it")] = False,
) -> None:
    """Detect the hardware, recommend a model, and write bastion.yaml with an API token.

    ``--force`` rewrites the file but keeps the existing ``api.token`` (clients keep working)
    unless ``--rotate-token`` is given.
    """
    from bastion.cli import _init
    from bastion.hardware import recommend
    from bastion.llm.native_build import detect_hardware

    path = paths.config_file()
    if path.exists() and not force:
        validate(read_raw(path), str(path))  # a broken file is an error, with its fix
        where = escape(str(path))
        _err.print(f"config already exists at {where} (kept; use --force to rewrite it)")
        if pull:
            _pull_and_use(recommend(detect_hardware()))
        return
    hw = detect_hardware()
    rec = recommend(hw)
    _err.print(_init.hardware_table(hw, rec))
    interactive = sys.stdin.isatty() and not yes
    if interactive and not typer.confirm(f"Write {path}?", default=True, err=True):
        raise typer.Exit(1)
    config = _init.build_config(hw, rec)
    kept = None if rotate_token or not path.exists() else _existing_token(path)
    if kept is not None:
        config.api.token = kept
    pin = _init.pin_audit_key(config)
    save(config, path)
    for name in ("workspace",):
        paths.data_dir(name)
    _init.admin_user(config)
    _err.print(f"wrote {escape(str(path))} (API token "
               f"{'kept' if kept is not None else 'created'}: "
               "bastion config get api.token --reveal)")
    _err.print(f"audit signing key fingerprint: {pin}\n  keep a copy away from this machine; "
               f"check the log against it with: bastion audit verify --fingerprint {pin}")
    if pull:
        _pull_and_use(rec)
        _err.print("Next: bastion doctor, then bastion chat")
        return
    _init.print_next_steps(_err, rec)


def _pull_and_use(rec: Recommendation) -> None:
    """``init --pull``: fetch the recommended model (verified) and make it the one that answers."""
    from bastion.cli.model import pull_recommended, use_model

    _err.print(f"pulling {escape(rec.pull_spec)} (recommended: see bastion model recommend)")
    use_model(pull_recommended(rec), n_ctx=rec.context, n_gpu_layers=rec.gpu_layers)


def _existing_token(path: Path) -> SecretStr | None:
    """Return the ``api.token`` of the config being rewritten (None when it has none)."""
    try:
        api = read_raw(path).get("api")
    except ConfigError:  # a broken file is what --force is for: nothing to keep
        return None
    token = api.get("token") if isinstance(api, dict) else None
    return SecretStr(token) if isinstance(token, str) and token else None


# -- doctor -----------------------------------------------------------------------------------
def doctor() -> None:
    """Check config, model, llama.cpp, sandbox, API token, disk; print the fix for each problem."""
    from bastion.cli._doctor import run_checks

    checks = run_checks()
    table = Table("check", "status", "detail", "fix", title="bastion doctor", title_justify="left")
    style = {"OK": "green", "WARN": "yellow", "FAIL": "bold red"}
    for c in checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", escape(c.detail), escape(c.fix))
    _out.print(table)
    failed = [c for c in checks if c.status == "FAIL"]
    if failed:
        _err.print(f"[red]error: {len(failed)} problem(s) (fix: run the commands in the fix "
                   "column above)[/]")
        raise typer.Exit(1)


# -- config -----------------------------------------------------------------------------------
config_app = typer.Typer(help="Show and change settings (bastion.yaml).", no_args_is_help=True)
RevealOpt = Annotated[bool, typer.Option("--reveal", help="show secrets in clear")]


def _print_value(value: Any) -> None:
    if isinstance(value, (dict, list)):
        typer.echo(yaml.safe_dump(value, sort_keys=False).rstrip())
    elif value is None:
        typer.echo("null")
    elif isinstance(value, bool):
        typer.echo("true" if value else "false")
    else:
        typer.echo(str(value))


@config_app.command("show")
def config_show(reveal: RevealOpt = False) -> None:
    """Print every setting (file + environment overrides); secrets masked."""
    _err.print(f"# {escape(str(paths.config_file()))}")
    _print_value(dump(load(), reveal=reveal))


@config_app.command("get")
def config_get(
    key: Annotated[str, typer.Argument(help="dotted key, e.g. model.backend")],
    reveal: RevealOpt = False,
) -> None:
    """Print one setting, e.g. ``bastion config get api.token --reveal``."""
    _print_value(get_key(load(), key, reveal=reveal))


@config_app.command("set")
def config_set(
    key: Annotated[str, typer.Argument(help="dotted key, e.g. model.base_url")],
    value: Annotated[str, typer.Argument(help="value (YAML: 42, true, [a, b]; '' unsets)")],
) -> None:
    """Change one setting in bastion.yaml (validated before it is written)."""
    path = paths.config_file()
    config = set_key(path, key, value)
    _err.print(f"set {escape(key)} = {escape(str(get_key(config, key)))} in {escape(str(path))}")


# -- ask --------------------------------------------------------------------------------------
async def _ask(app: App, question: str, renderer: EventRenderer | None,
               transcript: Transcript) -> None:
    try:
        agent = app.agent()
        async for event in agent.run(question, session_id=transcript.session, actor="cli"):
            transcript.add(event)
            if renderer is not None:
                renderer.handle(event)
    finally:
        await app.aclose()


def ask(
    question: Annotated[str, typer.Argument(help="what to ask")],
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON transcript")] = False,
    session: SessionOpt = None,
    yes: YesOpt = False,
    stream: Annotated[
        bool | None,
        typer.Option("--stream/--no-stream", help="stream tokens (default: when on a terminal)"),
    ] = None,
) -> None:
    """Ask once: the answer on stdout, tool steps on stderr; exit 1 if the turn fails.

    Without ``--session`` the turn is ephemeral: nothing is stored, so one-off questions never
    show up in sessions or in later answers' retrieved context.
    """
    if not question.strip():
        raise ConfigError("the question is empty", fix='bastion ask "your question"')
    app = _build(yes, ephemeral=session is None)
    from bastion.agent.loop import Agent

    transcript = Transcript(session or Agent.new_session_id(), app.model.name)
    renderer = None
    if not as_json:
        live = sys.stdout.isatty() if stream is None else stream
        renderer = EventRenderer(sys.stdout, _err, stream=live)
    asyncio.run(_ask(app, question, renderer, transcript))
    if as_json:
        typer.echo(json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2))
    elif renderer is not None:
        renderer.finish()
    if transcript.error is not None or transcript.answer is None:
        raise BastionError(transcript.error or "the turn ended without an answer")


# -- chat -------------------------------------------------------------------------------------
def chat(session: SessionOpt = None, yes: YesOpt = False) -> None:
    """Talk with the agent: streamed answers, tool steps, /help for commands."""
    from bastion.cli._chat import ChatSession

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    code = ChatSession(_build(yes), session).run()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the core commands to the ``bastion`` CLI."""
    app.command()(init)
    app.command()(doctor)
    app.add_typer(config_app, name="config")
    app.command()(ask)
    app.command()(chat)

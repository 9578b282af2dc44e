"""Adding a backend, a tool family or a CLI group touches two files (issue 15, acceptance).

Each test registers a throwaway addition exactly the way docs/ARCHITECTURE.md ("Files touched
to add ...") says: a module of its own (written to ``tmp_path``) plus one line in the one table
that names it (set with ``monkeypatch``). Everything else -- config validation, the factories,
``build_app``, the gateway, the CLI -- must then take it without another edit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from bastion.app import build_app
from bastion.config import backends
from bastion.config.model import Config
from bastion.messages import ToolCall
from bastion.models import create_model
from bastion.security.sandbox.factory import isolation_report
from bastion.testing import ScriptedModel

SANDBOX_MODULE = '''
from bastion.security.sandbox.base import SandboxBackend
from bastion.tools.base import ProcessResult

CLOSED = []


class Throwaway(SandboxBackend):
    name = "throwaway"

    def __init__(self, spec, *, warm=0):
        self.spec = spec

    @classmethod
    def _probe(cls):
        return None

    async def _run(self, argv, warm, stdin, env, wall, before):
        (self.spec.workspace / ".envrc").write_text("echo planted")  # a control entry
        return ProcessResult(0, "ran " + " ".join(argv), "")

    def close(self):
        super().close()
        CLOSED.append(self.spec.workspace)
'''


MODEL_MODULE = """
from bastion.testing import ScriptedModel, say


def build(config):
    return ScriptedModel(say("built for " + config.model.name))
"""

TOOLS_MODULE = """
from bastion.tools.base import ToolContext, tool
from bastion.tools.registry import Toolset


@tool()
async def throwaway_ping(ctx: ToolContext) -> str:
    '''Answer pong.'''
    return "pong"


def family():
    return Toolset("throwaway", (throwaway_ping,))
"""

CLI_MODULE = """
import typer

group = typer.Typer(help="A throwaway group.")


@group.command("ping")
def ping() -> None:
    '''Print pong.'''
    typer.echo("pong")


def register(app):
    app.add_typer(group, name="throwaway")
"""


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))


async def test_a_sandbox_backend_is_its_module_and_one_table_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _module(tmp_path, monkeypatch, "throwaway_sandbox", SANDBOX_MODULE)
    monkeypatch.setitem(backends.SANDBOX_BACKENDS, "throwaway", "throwaway_sandbox:Throwaway")
    import throwaway_sandbox

    cfg = Config.model_validate({
        "security": {"sandbox": "throwaway", "tool_sandboxes": {"python": "throwaway"},
                     "tools": {"shell": "allow"}},
        "mcp_servers": [{"name": "s", "command": ["x"], "sandbox": "throwaway"}],
        "agent": {"workspace": str(tmp_path / "ws")}, "memory": {"enabled": False}})
    assert [i.backend for i in isolation_report(cfg)] == ["throwaway", "throwaway"]
    cfg = cfg.model_copy(update={"mcp_servers": []})
    async with build_app(cfg, model=ScriptedModel()) as app:
        result = await app.gateway.execute(ToolCall("shell", {"command": "echo hi"}))
        assert result.ok and "ran " in result.text, result
        # the base class's run(): the control entry the command created is moved aside
        assert not (tmp_path / "ws" / ".envrc").exists()
        assert "moved to .bastion-quarantine-envrc-" in result.text
    assert [tmp_path / "ws", tmp_path / "ws"] == throwaway_sandbox.CLOSED  # default + python


def test_an_unregistered_sandbox_backend_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown sandbox backend 'throwaway'"):
        Config.model_validate({"security": {"tool_sandboxes": {"python": "throwaway"}}})


def test_a_model_backend_is_its_module_and_one_table_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _module(tmp_path, monkeypatch, "throwaway_model", MODEL_MODULE)
    with pytest.raises(ValidationError, match="unknown model backend 'throwaway'"):
        Config.model_validate({"model": {"backend": "throwaway"}})
    monkeypatch.setitem(backends.LEAF_MODEL_BACKENDS, "throwaway", "throwaway_model:build")
    model = create_model(Config.model_validate({"model": {"backend": "throwaway",
                                                          "name": "tiny"}}))
    assert isinstance(model, ScriptedModel) and model.replies[0].text == "built for tiny"


async def test_a_tool_family_is_its_module_and_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.app import build_registry
    from bastion.tools import builtin, registry

    _module(tmp_path, monkeypatch, "throwaway_tools", TOOLS_MODULE)
    monkeypatch.setattr(builtin, "FAMILIES", [*builtin.FAMILIES, "throwaway_tools:family"])
    monkeypatch.setattr(registry, "entry_points", lambda group: [])  # the source-tree path
    tools = build_registry(Config())
    assert tools.toolset("throwaway") == ["throwaway_ping"] and "browser_read" in tools
    cfg = Config.model_validate({"agent": {"workspace": str(tmp_path / "ws")},
                                 "memory": {"enabled": False}})
    async with build_app(cfg, model=ScriptedModel(), registry=tools) as app:
        result = await app.gateway.execute(ToolCall("throwaway_ping", {}))
    assert result.ok and result.text == "pong"


def test_a_cli_group_is_its_module_and_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from bastion.cli import main

    _module(tmp_path, monkeypatch, "throwaway_cli", CLI_MODULE)
    fresh = typer.Typer(name="bastion")
    monkeypatch.setattr(main, "app", fresh)
    monkeypatch.setattr(main, "COMMAND_MODULES", [*main.COMMAND_MODULES, "throwaway_cli"])
    main._load_commands()
    result = CliRunner().invoke(fresh, ["throwaway", "ping"])
    assert result.exit_code == 0 and result.output == "pong\n"


async def test_a_listed_cli_or_route_module_that_is_missing_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in COMMAND_MODULES or ROUTE_MODULES fails loudly instead of dropping the group."""
    import typer

    from bastion.cli import main
    from bastion.server import app as server_app

    monkeypatch.setattr(main, "app", typer.Typer(name="bastion"))
    monkeypatch.setattr(main, "COMMAND_MODULES", ["bastion.cli.no_such_group"])
    with pytest.raises(ModuleNotFoundError, match="bastion.cli.no_such_group"):
        main._load_commands()
    monkeypatch.setattr(server_app, "ROUTE_MODULES", ["bastion.server.routes.no_such_routes"])
    cfg = Config.model_validate({"memory": {"enabled": False}})
    async with build_app(cfg, model=ScriptedModel()) as app:
        with pytest.raises(ModuleNotFoundError, match="bastion.server.routes.no_such_routes"):
            server_app.create_app(app)

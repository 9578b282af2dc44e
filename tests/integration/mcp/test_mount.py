"""The reference server-everything mounted as a sandboxed, prefixed toolset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastion.config.model import Config
from bastion.memory.base import EphemeralMemory
from bastion.messages import ToolCall
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from bastion.testing import ScriptedModel, call, say
from tests.integration.mcp.conftest import EVERYTHING, NODE_ASSETS, child_env, need, write_config

pytest.importorskip("mcp")
pytestmark = pytest.mark.skipif(BubblewrapSandbox.available() is not None,
                                reason="bubblewrap is needed to launch stdio servers")


def everything(**extra: object) -> dict[str, object]:
    return {"name": "everything", "command": ["node", str(EVERYTHING), "stdio"],
            "mounts": [str(NODE_ASSETS)], **extra}


async def test_agent_calls_a_mounted_server_through_the_gateway(tmp_path: Path) -> None:
    need(EVERYTHING)
    from bastion.app import build_app

    config = Config.model_validate({
        "agent": {"workspace": str(tmp_path)},
        "security": {"tools": {"everything__get-env": "deny"}},
        "mcp_servers": [everything()],
    })
    model = ScriptedModel(call("everything__echo", message="through the gateway"), say("done"))
    app = build_app(config, model=model, memory=EphemeralMemory())
    try:
        names = app.registry.names()
        assert "everything__echo" in names and "everything__get-sum" in names
        # the server is one toolset: its tools are registered, and removed, as one
        assert sorted(app.registry.toolset("mcp:everything")) == sorted(
            n for n in names if n.startswith("everything__"))
        offered = {s.name for s in app.agent().tool_specs()}
        assert "everything__echo" in offered
        done = await app.agent().ask("echo something")
        assert done.answer == "done"
        assert "Echo: through the gateway" in model.seen[1].messages[-1].content
        total = await app.gateway.execute(ToolCall("everything__get-sum", {"a": 2, "b": 40}))
        assert total.ok and "42" in total.text
        # the server runs sandboxed: its environment is the sandbox's, not ours
        denied = await app.gateway.execute(ToolCall("everything__get-env", {}))
        assert denied.decision == "denied"
        events = app.audit.events(tool="everything__echo")
        assert len(events) == 1 and events[0].decision == "allowed"
        assert events[0].arguments == {"message": "through the gateway"}
    finally:
        await app.aclose()


async def test_mounted_server_is_confined(tmp_path: Path, bastion_home: Path) -> None:
    need(EVERYTHING)
    from bastion.app import build_app

    config = Config.model_validate({"agent": {"workspace": str(tmp_path)},
                                    "mcp_servers": [everything(env={"MARKER": "x1"})]})
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    try:
        env = await app.gateway.execute(ToolCall("everything__get-env", {}))
        assert env.ok and "MARKER" in env.text and "BASTION_HOME" not in env.text
        assert str(bastion_home) not in env.text
    finally:
        await app.aclose()


def test_broken_server_is_skipped_with_a_problem(tmp_path: Path) -> None:
    from bastion.app import build_app

    config = Config.model_validate({"agent": {"workspace": str(tmp_path)}, "mcp_servers": [
        {"name": "broken", "command": ["/usr/bin/false"], "timeout_s": 10}]})
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    assert not [n for n in app.registry.names() if n.startswith("broken__")]
    assert "list_files" in app.registry.names()


def test_cli_call(bastion_home: Path) -> None:
    need(EVERYTHING)
    write_config(bastion_home, mcp_servers=[everything()])
    env = child_env(bastion_home)
    out = subprocess.run([sys.executable, "-m", "bastion", "mcp", "call", "everything", "echo",
                          '{"message": "cli"}'], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0 and "Echo: cli" in out.stdout, out.stderr
    bad = subprocess.run([sys.executable, "-m", "bastion", "mcp", "call", "everything", "echo",
                          "{not json"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "not valid JSON" in bad.stderr

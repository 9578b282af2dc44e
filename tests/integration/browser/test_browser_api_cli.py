"""``bastion browser sessions|close`` against a real server (uvicorn) sharing the browser."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
import uvicorn
import yaml
from typer.testing import CliRunner

from bastion.errors import NotFoundError
from bastion.messages import ToolCall
from bastion.server.app import create_app
from tests.integration.browser.conftest import TOKEN, BrowserEnv

pytestmark = pytest.mark.asyncio(loop_scope="session")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_cli_lists_and_closes_sessions_of_the_server(env: BrowserEnv, bastion_home: Path
                                                           ) -> None:
    from bastion.cli.main import _load_commands
    from bastion.cli.main import app as cli

    _load_commands()
    res = await env.app.gateway.execute(
        ToolCall("browser_navigate", {"url": f"{env.site.url}/"}), session_id="cli-1")
    assert res.ok, res.text
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(env.app, close_app=False),
                                           host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        (bastion_home / "bastion.yaml").write_text(
            yaml.safe_dump({"api": {"port": port, "token": TOKEN}}))
        runner = CliRunner()
        listing = await asyncio.to_thread(runner.invoke, cli, ["browser", "sessions", "--json"])
        assert listing.exit_code == 0, listing.output
        data = json.loads(listing.output)
        assert data["enabled"] and data["sandboxed"] is env.app.browser.sandboxed  # type: ignore[union-attr]
        mine = [s for s in data["sessions"] if s["session_id"] == "cli-1"]
        assert mine and mine[0]["url"] == f"{env.site.url}/" and mine[0]["actions"] == 1
        table = await asyncio.to_thread(runner.invoke, cli, ["browser", "sessions"])
        assert "cli-1" in table.output and "chromium:" in table.output
        closed = await asyncio.to_thread(runner.invoke, cli, ["browser", "close", "cli-1"])
        assert closed.exit_code == 0 and "closed" in closed.output
        assert "cli-1" not in [s["session_id"] for s in env.app.browser.sessions()]  # type: ignore[union-attr]
        again = await asyncio.to_thread(runner.invoke, cli, ["browser", "close", "cli-1"])
        assert again.exit_code != 0 and isinstance(again.exception, NotFoundError)
    finally:
        server.should_exit = True
        await task

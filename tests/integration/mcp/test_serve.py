"""`bastion mcp serve`: bastion's tools over MCP, every call through the gateway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bastion.security.audit import AuditLog
from tests.integration.mcp.conftest import (
    CONFORMANCE,
    ROOT,
    TOKEN,
    child_env,
    need,
    write_config,
)

mcp = pytest.importorskip("mcp")


def text_of(result: object) -> str:
    return "\n".join(b.text for b in result.content if b.type == "text")  # type: ignore[attr-defined]


async def test_stdio_serves_tools_through_the_gateway(bastion_home: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("a note\n")
    write_config(bastion_home, agent={"workspace": str(ws)},
                 security={"tools": {"write_file": "deny"}})
    params = mcp.StdioServerParameters(command=sys.executable,
                                       args=["-m", "bastion", "mcp", "serve", "--stdio"],
                                       env=child_env(bastion_home))
    async with mcp.Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"list_files", "read_file", "write_file", "shell", "python"} <= names
        listed = await client.call_tool("list_files", {})
        assert not listed.is_error and "notes.txt" in text_of(listed)
        refused = await client.call_tool("write_file", {"path": "x.txt", "content": "no"})
        assert refused.is_error and "denied by policy" in text_of(refused)
        escape = await client.call_tool("read_file", {"path": "../../etc/passwd"})
        assert escape.is_error and "refused" in text_of(escape)
        shell = await client.call_tool("shell", {"command": "id -u; echo made > made.txt"})
        assert not shell.is_error and "exit_code: 0" in text_of(shell)  # uid: per backend
    assert not (ws / "x.txt").exists() and (ws / "made.txt").exists()
    audit = AuditLog(bastion_home / "audit" / "audit.db")
    events = audit.events()
    audit.close()
    seen = [(e.tool, e.decision, e.actor) for e in reversed(events)]
    assert ("write_file", "denied", "mcp:stdio") in seen
    assert ("shell", "allowed", "mcp:stdio") in seen


async def test_http_needs_the_token(served: tuple[str, Path]) -> None:
    url, _ = served
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, json=body)).status_code == 401
        bad = await http.post(url, json=body, headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401
    import httpx2
    from mcp.client.streamable_http import streamable_http_client
    client_http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
    async with mcp.Client(streamable_http_client(url, http_client=client_http)) as client:
        result = await client.call_tool("read_file", {"path": "hello.txt"})
        assert text_of(result) == "hello from the workspace\n"
        denied = await client.call_tool("write_file", {"path": "a", "content": "b"})
        assert denied.is_error


def test_conformance_suite_with_baseline(bastion_home: Path, tmp_path: Path) -> None:
    """The official conformance suite; only the recorded baseline may fail."""
    need(CONFORMANCE)
    write_config(bastion_home)
    from tests.integration.mcp.conftest import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bastion", "mcp", "serve", "--http", "--no-auth",
         "--port", str(port)],
        env=child_env(bastion_home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        import socket
        import time

        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        baseline = ROOT / "tests/integration/mcp/conformance-baseline.yml"
        run = subprocess.run(
            [str(CONFORMANCE), "server", "--url", f"http://127.0.0.1:{port}/mcp",
             "--expected-failures", str(baseline), "-o", str(tmp_path / "results")],
            capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        assert "Baseline check passed" in run.stdout
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_remote_gateway_mounted_as_a_toolset(served: tuple[str, Path],
                                                   tmp_path: Path) -> None:
    """An agent elsewhere reaches a served gateway through the same seam (mcp_servers url)."""
    from bastion.app import build_app
    from bastion.config.model import Config
    from bastion.memory.base import EphemeralMemory
    from bastion.messages import ToolCall
    from bastion.testing import ScriptedModel

    url, _ = served
    local = tmp_path / "local-ws"
    local.mkdir()
    config = Config.model_validate({
        "agent": {"workspace": str(local)},
        "mcp_servers": [{"name": "gw", "url": url, "token": TOKEN}],
    })
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    try:
        assert "gw__read_file" in app.registry.names()
        res = await app.gateway.execute(ToolCall("gw__read_file", {"path": "hello.txt"}))
        assert res.ok and res.text == "hello from the workspace\n"  # the remote workspace
        refused = await app.gateway.execute(
            ToolCall("gw__write_file", {"path": "a", "content": "b"}))
        assert not refused.ok and "denied by policy" in refused.text  # the remote policy
        assert app.audit.events(tool="gw__read_file")[0].decision == "allowed"  # local audit
    finally:
        await app.aclose()

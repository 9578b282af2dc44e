"""bastion as an MCP server: its tools, each call through the gateway.

``bastion mcp serve --stdio|--http`` and ``bastion gateway serve`` use this. The server
lists the registry's tools and answers ``tools/call`` with :meth:`Gateway.execute`, so
policy, approval, sandbox, egress and audit apply exactly as for the agent's own calls;
a refused call comes back as an MCP tool error with the reason.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bastion import __version__
from bastion._extras import require
from bastion.llm.messages import ToolCall
from bastion.security.gateway import Gateway

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INSTRUCTIONS = (
    "bastion's tools. Every call passes bastion's security gateway: it may be refused by "
    "policy or need a human's approval, runs sandboxed where the tool is, and is audited."
)


def build_server(gateway: Gateway, *, actor: str = "mcp") -> Any:
    """Return an ``mcp`` low-level ``Server`` exposing ``gateway``'s tools."""
    require("mcp", extra="mcp", feature="the MCP server")
    import mcp_types as types
    from mcp.server.lowlevel import Server

    async def list_tools(ctx: Any, params: Any) -> Any:
        tools = [
            types.Tool(name=s.name, description=s.description, input_schema=s.parameters)
            for s in gateway.registry.specs()
        ]
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: Any) -> Any:
        call = ToolCall(params.name, dict(params.arguments or {}))
        result = await gateway.execute(call, actor=actor, session_id=_session_of(ctx))
        text = result.text if result.ok else (result.error or result.text)
        structured = result.data if isinstance(result.data, dict) else None
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=structured,
            is_error=not result.ok,
        )

    return Server(
        "bastion",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _session_of(ctx: Any) -> str | None:
    for attr in ("session_id", "request_id"):
        value = getattr(ctx, attr, None)
        if isinstance(value, str) and value:
            return value[:32]
    return None


async def serve_stdio(gateway: Gateway) -> None:
    """Serve MCP over this process's stdin/stdout until the client disconnects."""
    require("mcp", extra="mcp", feature="the MCP server")
    from mcp.server.stdio import stdio_server

    server = build_server(gateway, actor="mcp:stdio")
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def bearer_guard(app: ASGIApp, token: str | None) -> ASGIApp:
    """Wrap ``app`` so every HTTP request needs ``Authorization: Bearer <token>``."""
    if token is None:
        return app
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                body = json.dumps({"error": "missing or wrong bearer token"}).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                ]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


def http_app(gateway: Gateway, *, token: str | None, host: str = "127.0.0.1",
             path: str = "/mcp", actor: str = "mcp:http") -> ASGIApp:
    """Return the streamable-HTTP ASGI app (token-checked unless ``token`` is None)."""
    server = build_server(gateway, actor=actor)
    app: ASGIApp = server.streamable_http_app(streamable_http_path=path, host=host)
    return bearer_guard(app, token)


async def serve_http(gateway: Gateway, *, host: str, port: int, token: str | None,
                     path: str = "/mcp", actor: str = "mcp:http") -> None:
    """Serve MCP over streamable HTTP with uvicorn until cancelled."""
    import uvicorn

    app = http_app(gateway, token=token, host=host, path=path, actor=actor)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()

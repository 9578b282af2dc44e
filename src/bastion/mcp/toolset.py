"""External MCP servers as toolsets: each remote tool becomes a prefixed :class:`Tool`.

The registry is built synchronously and calls arrive on whatever event loop the caller runs
(CLI, API, tests), while an MCP client session is a long-lived async context bound to one
loop. So each connection owns a small thread with its own loop that holds the session for
the app's lifetime; calls are handed to it with ``run_coroutine_threadsafe``. The remote
tools are ordinary registry entries, so every call passes the gateway (policy, approval,
audit) like any other tool. How a stdio server is launched (inside a sandbox) is decided by
the composition root, which passes the full command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion import telemetry
from bastion._extras import require
from bastion.errors import ToolError
from bastion.messages import ToolSpec
from bastion.tools.base import Risk, ToolContext, ToolOutput
from bastion.tools.registry import Toolset

PREFIX_SEP = "__"


@dataclass(slots=True)
class ServerSpec:
    """How to reach one MCP server: a stdio command line or a streamable-HTTP URL."""

    name: str
    argv: list[str] | None = None
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 60.0
    cwd: str | None = None
    errlog: Path | None = None  # where a stdio server's stderr goes (default: ours)
    # entered around each call: what the server does meanwhile is that call's (its egress
    # proxy names the call in the approvals it asks for)
    serving: Callable[[], contextlib.AbstractContextManager[None]] | None = None


@dataclass(slots=True, frozen=True)
class RemoteTool:
    """A tool as the server describes it."""

    name: str
    description: str
    input_schema: dict[str, Any]


def _client_transport(spec: ServerSpec, stack: contextlib.ExitStack) -> Any:
    mcp = require("mcp", extra="mcp", feature="MCP servers")
    if spec.argv:
        params = mcp.StdioServerParameters(
            command=spec.argv[0], args=spec.argv[1:], env=spec.env, cwd=spec.cwd
        )
        if spec.errlog is None:
            return params
        from mcp.client.stdio import stdio_client

        spec.errlog.parent.mkdir(parents=True, exist_ok=True)
        errlog = stack.enter_context(open(spec.errlog, "a", encoding="utf-8"))  # noqa: SIM115
        return stdio_client(params, errlog=errlog)
    assert spec.url is not None
    if not spec.headers:
        return spec.url
    from mcp.client.streamable_http import streamable_http_client

    httpx2 = require("httpx2", extra="mcp", feature="MCP over HTTP")
    client = httpx2.AsyncClient(headers=spec.headers, timeout=spec.timeout_s)
    return streamable_http_client(spec.url, http_client=client)


def render_result(result: Any) -> ToolOutput:
    """Turn an MCP ``CallToolResult`` into a :class:`ToolOutput`."""
    parts: list[str] = []
    for block in getattr(result, "content", None) or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            res = block.resource
            parts.append(getattr(res, "text", None) or f"[resource {res.uri}]")
        elif kind == "resource_link":
            parts.append(f"[resource link {block.uri}]")
        else:
            mime = getattr(block, "mimeType", None) or getattr(block, "mime_type", None)
            parts.append(f"[{kind} content{f' ({mime})' if mime else ''}]")
    structured = getattr(result, "structuredContent", None)
    if structured is None:
        structured = getattr(result, "structured_content", None)
    if not parts and structured is not None:
        parts.append(json.dumps(structured, ensure_ascii=False))
    is_error = bool(getattr(result, "isError", None) or getattr(result, "is_error", False))
    return ToolOutput("\n".join(parts), data=structured, is_error=is_error)


class MCPConnection:
    """A live client session to one MCP server, held on its own thread and loop."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.tools: list[RemoteTool] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> list[RemoteTool]:
        """Connect, list the tools and keep the session open; raises :class:`ToolError`."""
        self._thread = threading.Thread(
            target=self._thread_main, name=f"mcp-{self.spec.name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(self.spec.timeout_s):
            self.close()
            raise ToolError(f"MCP server {self.spec.name} did not answer within "
                            f"{self.spec.timeout_s:.0f}s")
        if self._error is not None:
            self.close()
            err = self._error
            raise ToolError(f"MCP server {self.spec.name} failed to start: "
                            f"{type(err).__name__}: {err}",
                            fix="check its command/url with 'bastion mcp list'") from err
        return self.tools

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._session_main())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _session_main(self) -> None:
        mcp = require("mcp", extra="mcp", feature="MCP servers")
        self._stop = asyncio.Event()
        try:
            with contextlib.ExitStack() as stack:
                transport = _client_transport(self.spec, stack)
                timeout = self.spec.timeout_s
                async with mcp.Client(transport, read_timeout_seconds=timeout) as client:
                    self._client = client
                    listed = await client.list_tools()
                    self.tools = [
                        RemoteTool(t.name, t.description or "", dict(_schema_of(t)))
                        for t in listed.tools
                    ]
                    self._ready.set()
                    await self._stop.wait()
        except BaseException as exc:  # reported to start(); the thread must not die loudly
            self._error = exc
        finally:
            self._client = None
            self._ready.set()

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> ToolOutput:
        """Call ``tool`` on the server from any event loop."""
        loop, client = self._loop, self._client
        if loop is None or client is None or loop.is_closed():
            raise ToolError(f"MCP server {self.spec.name} is not connected",
                            fix="restart bastion; see 'bastion mcp list'")
        meta: dict[str, str] = {}
        telemetry.inject(meta)  # W3C trace context in the request's _meta (MCP SEP-414)
        request = (client.call_tool(tool, dict(arguments), meta=meta) if meta
                   else client.call_tool(tool, dict(arguments)))
        fut = asyncio.run_coroutine_threadsafe(request, loop)
        serving = self.spec.serving() if self.spec.serving else contextlib.nullcontext()
        try:
            with serving:
                result = await asyncio.wait_for(asyncio.wrap_future(fut), self.spec.timeout_s)
        except TimeoutError as exc:
            fut.cancel()
            raise ToolError(f"{self.spec.name}: {tool} timed out after "
                            f"{self.spec.timeout_s:.0f}s") from exc
        except Exception as exc:
            raise ToolError(f"{self.spec.name}: {tool} failed: {exc}") from exc
        return render_result(result)

    def close(self) -> None:
        """End the session (stops the server process for stdio) and join the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)


def _schema_of(tool: Any) -> Mapping[str, Any]:
    schema = getattr(tool, "inputSchema", None)
    if schema is None:
        schema = getattr(tool, "input_schema", None)
    return schema or {"type": "object", "properties": {}}


class MCPTool:
    """One remote tool, registered as ``<server>__<tool>``; calls go over the connection.

    What the server says about its tool is untrusted: its risk is bastion's configured
    level for the server, never derived from the server's annotations (``readOnlyHint``,
    ``destructiveHint`` ...) or description, which bastion does not read for any decision.
    """

    sandboxed = False  # the server process itself is confined when it is launched

    def __init__(self, connection: MCPConnection, remote: RemoteTool, risk: Risk,
                 *, egress: bool = True) -> None:
        self.connection = connection
        self.egress = egress  # the arguments reach a server that can send them on
        self.remote = remote
        self.name = f"{connection.spec.name}{PREFIX_SEP}{remote.name}"
        self.description = remote.description or f"{remote.name} (MCP server "\
                                                  f"{connection.spec.name})"
        self.parameters = remote.input_schema
        self.risk = risk

    def spec(self) -> ToolSpec:
        """Return what the model is told about the tool."""
        return ToolSpec(self.name, self.description, self.parameters)

    async def __call__(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        """Forward the call to the server (it validates the arguments itself)."""
        return await self.connection.call(self.remote.name, args)


def server_toolset(connection: MCPConnection, *, risk: Risk = Risk.MEDIUM,
                   only: Sequence[str] | None = None, egress: bool = True) -> Toolset:
    """Return one connected server's tools as a :class:`Toolset` named ``mcp:<server>``.

    Its tools carry the ``<server>__`` prefix; ``only`` (the server's own tool names, as in
    ``mcp_servers[].tools``) filters them; closing the toolset disconnects the server.
    """
    tools = tuple(MCPTool(connection, t, risk, egress=egress) for t in connection.tools)
    toolset = Toolset(f"mcp:{connection.spec.name}", tools, closer=connection.close)
    if only is None:
        return toolset
    return toolset.filtered(f"{connection.spec.name}{PREFIX_SEP}{name}" for name in only)

"""bastion as an MCP server: tools, resources, prompts, completions, logging, approvals.

``bastion mcp serve --stdio|--http`` and ``bastion gateway serve`` use this. Everything a
client gets passes bastion's security layer:

- ``tools/call`` runs :meth:`Gateway.execute` (policy, risk, approval, sandbox, secret
  scan, audit); a refused call is an MCP tool error with the reason. A client that sends a
  progress token gets progress notifications; the gateway's decision is logged to it. A
  tool result naming a binary workspace file (``read_file`` on an image) also carries the
  file as image, audio or embedded-resource content.
- ``resources/*`` serves the workspace files and the audit trail; every read is a gateway
  call of the ``read_resource`` tool (see :mod:`bastion.mcp._resources`).
- ``prompts/*`` and ``completion/complete`` serve :mod:`bastion.mcp._prompts`.
- ``logging/setLevel`` and log messages, subscriptions and elicitation-based approval live
  in :mod:`bastion.mcp._session`.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bastion import __version__
from bastion._extras import require
from bastion.errors import BastionError
from bastion.mcp import _prompts
from bastion.mcp._resources import (
    AUDIT_EVENT_TEMPLATE,
    AUDIT_SESSION_TEMPLATE,
    PAGE,
    Content,
    Resources,
    blob_text,
)
from bastion.mcp._session import (
    APPROVAL_KEY,
    CallReporter,
    ClientLog,
    ProgressStage,
    RoundState,
    Watcher,
    client_key,
    connection_of,
    run_reported,
    set_level,
)
from bastion.messages import ToolCall
from bastion.security.audit import AuditLog
from bastion.security.gateway import Gateway, ToolResult
from bastion.security.redact import Redactor

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RESOURCE_NOT_FOUND = -32002
INVALID_PARAMS = -32602

INSTRUCTIONS = (
    "bastion's tools, workspace files (resources) and prompts. Every tool call and resource "
    "read passes bastion's security gateway: it may be refused by policy or need a human's "
    "approval (asked through elicitation when this client supports it), runs sandboxed where "
    "the tool is, has secrets redacted from its output, and is audited."
)


def _find(gateway: Gateway, attr: str, kind: type) -> Any:
    """Return the first gateway stage attribute ``attr`` of type ``kind`` (redactor, audit)."""
    for stage in gateway.stages:
        value = getattr(stage, attr, None)
        if isinstance(value, kind):
            return value
    return None


def _mcp_error(code: int, message: str) -> Exception:
    from mcp.shared.exceptions import MCPError

    return MCPError(code, message)


def _resource_error(exc: BastionError) -> Exception:
    text = exc.user_text()
    missing = "does not exist" in text or "unknown resource" in text or "no audit event" in text
    return _mcp_error(RESOURCE_NOT_FOUND if missing else INVALID_PARAMS, text)


class BastionMCP:
    """The handlers of bastion's MCP server (one instance serves every client)."""

    def __init__(self, gateway: Gateway, *, actor: str, redactor: Redactor | None = None,
                 audit: Any = None) -> None:
        self.gateway = gateway
        self.actor = actor
        self.redactor = redactor or _find(gateway, "redactor", Redactor) or Redactor()
        self.audit = audit if audit is not None else _find(gateway, "log", AuditLog)
        self.resources = Resources(gateway, self.redactor.scanner, self.audit)
        self.watcher = Watcher(self.resources.workspace.root)
        self.rounds = RoundState()
        if not any(isinstance(s, ProgressStage) for s in gateway.stages):
            gateway.add_stage(ProgressStage())  # innermost: reached once checks passed
        from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler

        self.bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self.bus)

    # ---- tools -------------------------------------------------------------------------------
    async def list_tools(self, ctx: Any, params: Any) -> Any:
        """``tools/list``: the registry's tools."""
        import mcp_types as types

        return types.ListToolsResult(tools=[
            types.Tool(name=s.name, description=s.description, input_schema=s.parameters)
            for s in self.gateway.registry.specs()
        ])

    async def call_tool(self, ctx: Any, params: Any) -> Any:
        """``tools/call``: through the gateway, with progress and log messages."""
        import mcp_types as types

        call = ToolCall(params.name, dict(params.arguments or {}))
        session = _session_of(ctx)
        reporter = CallReporter(ctx, ClientLog(ctx, self.redactor), params.name)
        answer = (params.input_responses or {}).get(APPROVAL_KEY)
        if answer is not None and self.rounds.redeem(params.request_state, call.name,
                                                      call.arguments, client_key(ctx)):
            reporter.answer = answer  # the user's answer to the approval asked last round
        result = await run_reported(reporter, self.gateway.execute(
            call, actor=self.actor, session_id=session))
        if reporter.asked is not None and not result.ok:  # 2026 client: ask, then retry
            message, schema = reporter.asked
            ask = types.ElicitRequest(params=types.ElicitRequestFormParams(
                message=message, requested_schema=schema))
            return types.InputRequiredResult(
                input_requests={APPROVAL_KEY: ask},
                request_state=self.rounds.issue(call.name, call.arguments, client_key(ctx)))
        text = result.text if result.ok else (result.error or result.text)
        content: list[Any] = [types.TextContent(type="text", text=text)]
        content += await self._rich(result, session)
        structured = result.data if isinstance(result.data, dict) else None
        return types.CallToolResult(content=content, structured_content=structured,
                                    is_error=not result.ok)

    async def _rich(self, result: ToolResult, session: str | None) -> list[Any]:
        """Image/audio/resource content for a result that names a binary workspace file."""
        data = result.data if isinstance(result.data, dict) else {}
        if not (result.ok and data.get("binary") and isinstance(data.get("path"), str)):
            return []
        try:
            got = await self.resources.read(self.resources.workspace.uri(data["path"]),
                                            actor=self.actor, session_id=session)
        except BastionError:
            return []  # the text result already says what the file is
        return [_content_block(got)]

    # ---- resources ---------------------------------------------------------------------------
    async def list_resources(self, ctx: Any, params: Any) -> Any:
        """``resources/list``: workspace files (paged) and the recent audit events.

        A gateway call of ``read_resource`` (``{"list": "resources"}``): policy can refuse
        it, and it is audited like a read.
        """
        import mcp_types as types

        cursor = getattr(params, "cursor", None) if params is not None else None
        start = int(cursor) if cursor and str(cursor).isdigit() else 0
        listed = (await self._gated({"list": "resources"}, ctx)).get("listing", [])
        page = listed[start:start + PAGE]
        nxt = str(start + PAGE) if start + PAGE < len(listed) else None
        return types.ListResourcesResult(resources=[types.Resource(**r) for r in page],
                                         next_cursor=nxt)

    async def _gated(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """Run ``read_resource(args)`` through the gateway; a refusal is an MCP error."""
        try:
            return await self.resources.call(args, actor=self.actor, session_id=_session_of(ctx))
        except BastionError as exc:
            raise _resource_error(exc) from exc

    async def list_templates(self, ctx: Any, params: Any) -> Any:
        """``resources/templates/list``."""
        import mcp_types as types

        return types.ListResourceTemplatesResult(resource_templates=[
            types.ResourceTemplate(**t) for t in self.resources.templates()])

    async def read_resource(self, ctx: Any, params: Any) -> Any:
        """``resources/read``: through the gateway (policy, secret scan, audit)."""
        import mcp_types as types

        got = await self._read(str(params.uri), ctx)
        return types.ReadResourceResult(contents=[_contents(got)])

    async def _read(self, uri: str, ctx: Any) -> Content:
        try:
            return await self.resources.read(uri, actor=self.actor, session_id=_session_of(ctx))
        except BastionError as exc:
            raise _resource_error(exc) from exc

    async def _watchable(self, uri: str, ctx: Any) -> str:
        """Return the workspace path a subscription URI names (a gateway call), or raise."""
        return str((await self._gated({"watch": uri}, ctx))["path"])

    async def subscribe(self, ctx: Any, params: Any) -> Any:
        """``resources/subscribe``: watch a workspace file for this client."""
        import mcp_types as types

        uri = str(params.uri)
        rel = await self._watchable(uri, ctx)
        conn = connection_of(ctx)
        if conn is None:
            raise _mcp_error(INVALID_PARAMS, "subscriptions need a connection")
        subs: dict[str, Callable[[], None]] = conn.state.setdefault("bastion.subs", {})
        if uri not in subs:
            async def updated(changed: str) -> None:
                await conn.outbound.notify("notifications/resources/updated", {"uri": changed})

            subs[uri] = self.watcher.add(uri, rel, updated)
            if len(subs) == 1:
                conn.exit_stack.callback(_drop_all, subs)
        return types.EmptyResult()

    async def unsubscribe(self, ctx: Any, params: Any) -> Any:
        """``resources/unsubscribe``."""
        import mcp_types as types

        conn = connection_of(ctx)
        subs = conn.state.get("bastion.subs", {}) if conn is not None else {}
        remove = subs.pop(str(params.uri), None)
        if remove is not None:
            remove()
        return types.EmptyResult()

    async def listen(self, ctx: Any, params: Any) -> Any:
        """``subscriptions/listen`` (2026-07-28 clients): watched files feed the stream."""
        from mcp.server.subscriptions import ResourceUpdated

        async def publish(uri: str) -> None:
            await self.bus.publish(ResourceUpdated(uri=uri))

        removes = []
        for uri in params.notifications.resource_subscriptions or ():
            try:
                rel = await self._watchable(uri, ctx)
            except Exception:
                continue  # honoured by the SDK but never fires: not a workspace file
            removes.append(self.watcher.add(uri, rel, publish))
        try:
            return await self._listen(ctx, params)
        finally:
            for remove in removes:
                remove()

    # ---- prompts and completion --------------------------------------------------------------
    async def list_prompts(self, ctx: Any, params: Any) -> Any:
        """``prompts/list``."""
        import mcp_types as types

        return types.ListPromptsResult(prompts=[
            types.Prompt(name=p.name, title=p.title, description=p.description, arguments=[
                types.PromptArgument(name=a.name, description=a.description,
                                     required=a.required) for a in p.arguments])
            for p in _prompts.PROMPTS])

    async def get_prompt(self, ctx: Any, params: Any) -> Any:
        """``prompts/get``: the instructions, with the named resource embedded."""
        import mcp_types as types

        prompt = _prompts.BY_NAME.get(params.name)
        if prompt is None:
            raise _mcp_error(INVALID_PARAMS, f"unknown prompt {params.name!r}; see prompts/list")
        args = {k: str(v) for k, v in (params.arguments or {}).items()}
        lacking = _prompts.missing(prompt, args)
        if lacking:
            raise _mcp_error(INVALID_PARAMS, f"prompt {prompt.name} needs: {', '.join(lacking)}")
        messages = [types.PromptMessage(role="user", content=types.TextContent(
            type="text", text=_prompts.render(prompt, args)))]
        if prompt.embed is not None:
            got = await self._read(self._prompt_uri(prompt, args[prompt.embed]), ctx)
            messages.append(types.PromptMessage(role="user", content=_content_block(got)))
        return types.GetPromptResult(description=prompt.description, messages=messages)

    def _prompt_uri(self, prompt: _prompts.PromptDef, value: str) -> str:
        if prompt.embed_as == "event":
            if not value.isdigit():
                raise _mcp_error(INVALID_PARAMS, "event_id must be a number")
            return AUDIT_EVENT_TEMPLATE.replace("{id}", value)
        if prompt.embed_as == "session":
            from urllib.parse import quote

            return AUDIT_SESSION_TEMPLATE.replace("{session_id}", quote(value, safe=""))
        return self.resources.workspace.uri(value)

    async def complete(self, ctx: Any, params: Any) -> Any:
        """``completion/complete`` for prompt arguments and resource-template variables."""
        import mcp_types as types

        ref, arg = params.ref, params.argument
        if ref.type == "ref/prompt":
            prompt = _prompts.BY_NAME.get(ref.name)
            spec = prompt.argument(arg.name) if prompt is not None else None
            if spec is None:
                raise _mcp_error(INVALID_PARAMS, f"no argument {arg.name!r} of prompt "
                                                 f"{ref.name!r}; see prompts/list")
            kind, choices = spec.complete, spec.choices
        else:
            kind, choices = self._template_kind(ref.uri, arg.name), ()
        if kind in ("path", "event", "session"):  # names from the workspace or the audit log
            got = await self._gated({"complete": kind, "value": arg.value or ""}, ctx)
            values, total = list(got.get("values", [])), int(got.get("total", 0))
        else:
            hits = [v for v in choices if v.startswith(arg.value or "")]
            values, total = hits[:100], len(hits)
        return types.CompleteResult(completion=types.Completion(
            values=values, total=total, has_more=total > len(values)))

    def _template_kind(self, uri: str, name: str) -> str:
        known = {(self.resources.workspace.template, "path"): "path",
                 (AUDIT_EVENT_TEMPLATE, "id"): "event",
                 (AUDIT_SESSION_TEMPLATE, "session_id"): "session"}
        kind = known.get((uri, name))
        if kind is None:
            raise _mcp_error(INVALID_PARAMS, f"no template variable {name!r} in {uri!r}; see "
                                             "resources/templates/list")
        return kind

    # ---- logging ------------------------------------------------------------------------------
    async def set_logging_level(self, ctx: Any, params: Any) -> Any:
        """``logging/setLevel``: the lowest level of log messages this client gets."""
        import mcp_types as types

        set_level(ctx, params.level)
        return types.EmptyResult()

    def server(self) -> Any:
        """Return the ``mcp`` low-level ``Server`` with every handler registered."""
        from mcp.server.lowlevel import Server
        from mcp.shared.exceptions import MCPDeprecationWarning

        with warnings.catch_warnings():  # logging is deprecated only for 2026-07-28 clients
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            return Server(
                "bastion",
                version=__version__,
                instructions=INSTRUCTIONS,
                on_list_tools=self.list_tools,
                on_call_tool=self.call_tool,
                on_list_resources=self.list_resources,
                on_list_resource_templates=self.list_templates,
                on_read_resource=self.read_resource,
                on_subscribe_resource=self.subscribe,
                on_unsubscribe_resource=self.unsubscribe,
                on_subscriptions_listen=self.listen,
                on_list_prompts=self.list_prompts,
                on_get_prompt=self.get_prompt,
                on_completion=self.complete,
                on_set_logging_level=self.set_logging_level,
            )


def _drop_all(subs: dict[str, Callable[[], None]]) -> None:
    for remove in subs.values():
        remove()
    subs.clear()


def _contents(got: Content) -> Any:
    import mcp_types as types

    if got.text is not None:
        return types.TextResourceContents(uri=got.uri, mime_type=got.mime_type, text=got.text)
    return types.BlobResourceContents(uri=got.uri, mime_type=got.mime_type, blob=blob_text(got))


def _content_block(got: Content) -> Any:
    """Return a content block for a read resource: image, audio or embedded resource."""
    import mcp_types as types

    if got.blob is not None and got.mime_type.startswith("image/"):
        return types.ImageContent(type="image", data=blob_text(got), mime_type=got.mime_type)
    if got.blob is not None and got.mime_type.startswith("audio/"):
        return types.AudioContent(type="audio", data=blob_text(got), mime_type=got.mime_type)
    return types.EmbeddedResource(type="resource", resource=_contents(got))


def build_server(gateway: Gateway, *, actor: str = "mcp", redactor: Redactor | None = None,
                 audit: Any = None) -> Any:
    """Return an ``mcp`` low-level ``Server`` serving ``gateway`` (tools, resources, ...)."""
    require("mcp", extra="mcp", feature="the MCP server")
    return BastionMCP(gateway, actor=actor, redactor=redactor, audit=audit).server()


def _session_of(ctx: Any) -> str | None:
    conn = connection_of(ctx)
    value = getattr(conn, "session_id", None)
    if isinstance(value, str) and value:
        return value[:32]
    return None


async def serve_stdio(gateway: Gateway) -> None:
    """Serve MCP over this process's stdin/stdout until the client disconnects."""
    require("mcp", extra="mcp", feature="the MCP server")
    from mcp.server.stdio import stdio_server

    server = build_server(gateway, actor="mcp:stdio")
    for fd in (0, 1):  # a child started while the app was built (runsc) may have made our
        with contextlib.suppress(OSError):  # shared stdio non-blocking: reads would end early
            os.set_blocking(fd, True)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


MCP_SCOPE = "chat"  # what a key needs to use the MCP server; tools:<glob> picks the tools


def bearer_guard(app: ASGIApp, token: str | None) -> ASGIApp:
    """Wrap ``app`` so every HTTP request needs an API key (``Authorization: Bearer <key>``).

    The same users and keys as ``bastion serve`` (``bastion keys create``): the api.token is
    the admin's key; a key needs the ``chat`` scope (401 unknown, revoked or expired; 403
    without the scope), and its ``tools:<glob>`` scopes limit the tools it may call, at the
    gateway. Audit records carry the user and key id.
    """
    if token is None:
        return app
    from bastion.errors import AuthError
    from bastion.security.identity import acting_as
    from bastion.security.keystore import KeyStore, open_store

    stores: list[KeyStore] = []

    def store() -> KeyStore:
        if not stores:
            opened = open_store()
            opened.ensure_admin(token)
            stores.append(opened)
        return stores[0]

    async def refuse(send: Send, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json")]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        kind, _, value = header.decode("latin-1").partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            await refuse(send, 401, "missing or wrong bearer token")
            return
        try:
            principal = store().authenticate(value.strip())
        except AuthError as exc:
            wrong = exc.message == "wrong API key"
            await refuse(send, 401, "missing or wrong bearer token" if wrong else exc.message)
            return
        if not principal.allows(MCP_SCOPE):
            await refuse(send, 403, f"this API key lacks the scope {MCP_SCOPE!r}")
            return
        with acting_as(principal):
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

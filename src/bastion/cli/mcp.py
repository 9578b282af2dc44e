"""``bastion mcp``: serve bastion's tools over MCP; inspect and call mounted MCP servers."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import out_console
from bastion.cli._terminal import visible
from bastion.errors import BastionError, ConfigError, ToolError

if TYPE_CHECKING:
    from bastion.app import App
    from bastion.config.model import Config
    from bastion.mcp.mount import Closeable

mcp_app = typer.Typer(help="MCP: serve bastion's tools, inspect and call mounted servers.",
                      no_args_is_help=True)
_out = out_console(highlight=False)
_err = Console(stderr=True, highlight=False)

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="approve every risky call")]


def tools_app(*, yes: bool = False, elicit: bool = True) -> App:
    """Return the app from config for tools-only work: no model is loaded.

    A call that needs approval is put to the MCP client's user through elicitation when the
    client supports it (unless ``elicit`` is false); otherwise it is denied, unless ``yes``.
    """
    from bastion.app import build_app
    from bastion.cli.approval import choose_approver
    from bastion.config.loader import load
    from bastion.mcp._nomodel import ToolsOnlyModel
    from bastion.mcp._session import ElicitingApprover
    from bastion.memory.base import EphemeralMemory

    fallback = choose_approver(yes=yes, interactive=False)
    app = build_app(load(), model=ToolsOnlyModel(), memory=EphemeralMemory(), approver=fallback)
    if elicit and not yes:
        app.set_approver(ElicitingApprover(fallback, app.redactor))
    return app


def api_token(config: Config, no_auth: bool, host: str,
              command: str = "bastion mcp serve --http") -> str | None:
    """Return the bearer token HTTP serving needs (``None`` only for --no-auth on loopback)."""
    if no_auth:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError("--no-auth is only allowed on a loopback address",
                              fix="drop --no-auth, or bind --host 127.0.0.1")
        return None
    from bastion.config.tokens import serving_token

    return serving_token(config.api.token, command)


@mcp_app.command("serve")
def serve(
    stdio: Annotated[bool, typer.Option("--stdio", help="serve on stdin/stdout (default)")] = False,
    http: Annotated[bool, typer.Option("--http", help="serve streamable HTTP at /mcp")] = False,
    host: Annotated[str, typer.Option(help="HTTP bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8766,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="no bearer token (loopback only)")]
    = False,
    yes: YesOpt = False,
    elicit: Annotated[bool, typer.Option(
        "--elicit/--no-elicit",
        help="ask the MCP client's user to approve risky calls (when the client can); "
             "--no-elicit denies them unless --yes")] = True,
) -> None:
    """Expose bastion's tools, workspace resources and prompts over MCP, all through the gateway.

    Every tool call and resource read passes policy, approval, sandbox, secret scan and audit.
    """
    from bastion.mcp.server import serve_http, serve_stdio

    if stdio and http:
        raise ConfigError("choose one of --stdio and --http")
    token: str | None = None
    if http:  # a weak token stops the server before anything is built
        from bastion.config.loader import load

        token = api_token(load(), no_auth, host)
    app = tools_app(yes=yes, elicit=elicit)

    async def main() -> None:
        try:
            if http:
                _err.print(f"bastion MCP server on http://{host}:{port}/mcp "
                           f"({'no auth' if token is None else 'bearer token = api.token'})")
                await serve_http(app.gateway, host=host, port=port, token=token)
            else:
                await serve_stdio(app.gateway)
        finally:
            await app.aclose()

    asyncio.run(main())


@mcp_app.command("list")
def list_servers(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the configured MCP servers and whether each one starts and answers."""
    from bastion.config.loader import load
    from bastion.mcp.mount import close_kept, connect

    config = load()
    if not config.mcp_servers and not as_json:
        _err.print("no MCP servers configured (add them under mcp_servers: in bastion.yaml)")
        return
    rows: list[dict[str, object]] = []
    for cfg in config.mcp_servers:
        row: dict[str, object] = {
            "name": cfg.name, "transport": cfg.url or " ".join(cfg.command or []),
            "sandbox": None if cfg.url else (config.security.sandbox if cfg.sandbox == "default"
                                             else cfg.sandbox),
            "status": "disabled", "error": None, "tools": None}
        rows.append(row)
        if not cfg.enabled:
            continue
        keep: list[Closeable] = []
        try:
            toolset = connect(cfg, config, keep)
        except BastionError as exc:
            row.update(status="failed", error=exc.user_text())
            continue
        row.update(status="ok", tools=len(toolset.tools))
        toolset.close()
        close_kept(keep)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "transport", "sandbox", "status", "tools", title="MCP servers",
                  title_justify="left")
    for row in rows:
        status = (f"[red]{escape(str(row['error']))}" if row["error"] else
                  "[green]ok" if row["status"] == "ok" else str(row["status"]))
        table.add_row(str(row["name"]), escape(str(row["transport"])), str(row["sandbox"] or "-"),
                      status, "" if row["tools"] is None else str(row["tools"]))
    _out.print(table)


@mcp_app.command("tools")
def list_tools(
    server: Annotated[str | None, typer.Argument(help="only this server")] = None,
) -> None:
    """List the tools of the mounted servers (as the agent sees them, with their prefix)."""
    from bastion.config.loader import load
    from bastion.mcp.mount import close_kept, connect

    config = load()
    chosen = [c for c in config.mcp_servers if server in (None, c.name) and c.enabled]
    if server is not None and not chosen:
        raise ConfigError(f"no enabled MCP server named {server!r}",
                          fix="see 'bastion mcp list'")
    for cfg in chosen:
        keep: list[Closeable] = []
        toolset = connect(cfg, config, keep)
        try:
            for t in toolset.tools:
                first = t.description.splitlines()[0] if t.description else ""
                _out.print(f"[bold]{escape(visible(t.name))}[/]  {escape(visible(first))}")
        finally:
            toolset.close()
            close_kept(keep)


@mcp_app.command("call")
def call(
    server: Annotated[str, typer.Argument(help="server name")],
    tool: Annotated[str, typer.Argument(help="tool name (without the prefix)")],
    arguments: Annotated[str, typer.Argument(help="JSON object of arguments")] = "{}",
    yes: YesOpt = False,
) -> None:
    """Call one tool of a mounted server through the gateway (policy, approval and audit apply)."""
    from bastion.mcp.toolset import PREFIX_SEP
    from bastion.messages import ToolCall

    try:
        args = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"arguments are not valid JSON: {exc.msg}",
                          fix='pass a JSON object, e.g. \'{"message": "hi"}\'') from exc
    if not isinstance(args, dict):
        raise ConfigError("arguments must be a JSON object",
                          fix='pass a JSON object, e.g. \'{"message": "hi"}\'')
    app = tools_app(yes=yes)
    names = [s.name for s in app.config.mcp_servers]
    if server not in names:
        asyncio.run(app.aclose())
        raise ConfigError(f"no MCP server named {server!r}", fix=(
            f"use one of: {', '.join(names)}" if names else
            "add one under mcp_servers in bastion.yaml (README: MCP)"))

    async def main() -> int:
        try:
            name = f"{server}{PREFIX_SEP}{tool}"
            result = await app.gateway.execute(ToolCall(name, args), actor="cli")
        finally:
            await app.aclose()
        if not result.ok:
            text = visible(result.error or result.text)
            raise ToolError(text, fix=None if "(fix: " in text else
                            "bastion audit tools -n 1 shows the call and its decision")
        typer.echo(visible(result.text))
        return 0

    raise typer.Exit(asyncio.run(main()))


def register(app: typer.Typer) -> None:
    """Add ``bastion mcp`` to the CLI."""
    app.add_typer(mcp_app, name="mcp")

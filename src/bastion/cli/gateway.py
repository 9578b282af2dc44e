"""``bastion gateway serve``: the tool gateway as its own process (MCP over HTTP, token auth).

Tools then execute on the host and as the user this process runs as; an agent elsewhere
reaches them by mounting it as an MCP server (``mcp_servers: [{name, url, token}]``), so
its calls take the same seam as local tools, and this process applies its own policy,
sandbox, egress and audit to each of them.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

gateway_app = typer.Typer(help="Run the tool gateway as its own process.", no_args_is_help=True)
_err = Console(stderr=True, highlight=False)


@gateway_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8767,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="approve every risky call")] = False,
) -> None:
    """Serve every tool over MCP (streamable HTTP at /mcp); requests need the API token."""
    from bastion.cli.mcp import api_token, tools_app
    from bastion.config.loader import load
    from bastion.mcp.server import serve_http

    token = api_token(load(), False, host, "bastion gateway serve")
    app = tools_app(yes=yes)

    async def main() -> None:
        try:
            _err.print(f"bastion gateway on http://{host}:{port}/mcp (bearer token = api.token)")
            await serve_http(app.gateway, host=host, port=port, token=token, actor="gateway")
        finally:
            await app.aclose()

    asyncio.run(main())


def register(app: typer.Typer) -> None:
    """Add ``bastion gateway`` to the CLI."""
    app.add_typer(gateway_app, name="gateway")

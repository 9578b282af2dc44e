"""A one-tool MCP stdio server: ``_tool_server.py SERVER TOOL``; the tool says who it is."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer


def main(server_name: str, tool_name: str) -> None:
    server = MCPServer(server_name)

    @server.tool(name=tool_name, description=f"{tool_name} of server {server_name}")
    def whoami() -> str:
        return f"answered by server {server_name}"

    server.run("stdio")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

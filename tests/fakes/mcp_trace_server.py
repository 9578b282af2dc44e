"""An MCP streamable-HTTP server with one tool that says which trace context it was sent.

``python -m tests.fakes.mcp_trace_server PORT``: the tool ``echo_trace`` answers JSON with the
request's ``_meta`` trace keys (MCP SEP-414) and the HTTP ``traceparent`` header, if any.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer


def main(port: int) -> None:
    server = MCPServer("trace-echo")

    @server.tool(name="echo_trace", description="Say which trace context the call carried.")
    def echo_trace(ctx: Context) -> str:  # type: ignore[type-arg]
        meta: Any = getattr(ctx.request_context, "meta", None) or {}
        if not isinstance(meta, dict):
            meta = meta.model_dump() if hasattr(meta, "model_dump") else dict(meta)
        headers = ctx.headers or {}
        return json.dumps({"meta": {k: v for k, v in meta.items() if "trace" in k},
                           "header": headers.get("traceparent")})

    server.run("streamable-http", host="127.0.0.1", port=port)


if __name__ == "__main__":
    main(int(sys.argv[1]))

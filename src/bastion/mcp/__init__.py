"""MCP: external servers mounted as toolsets, and bastion's gateway served over MCP."""

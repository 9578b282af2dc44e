"""MCP toolsets without a server: result rendering, prefixes, launch command, config."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bastion.config.model import Config, McpServerConfig
from bastion.mcp.toolset import MCPConnection, MCPTool, RemoteTool, ServerSpec, render_result
from bastion.tools.base import Risk

types = pytest.importorskip("mcp_types")


def test_render_text_structured_and_errors() -> None:
    ok = types.CallToolResult(content=[types.TextContent(type="text", text="a"),
                                       types.TextContent(type="text", text="b")])
    out = render_result(ok)
    assert out.text == "a\nb" and not out.is_error
    err = types.CallToolResult(content=[types.TextContent(type="text", text="bad")],
                               is_error=True)
    assert render_result(err).is_error
    structured = types.CallToolResult(content=[], structured_content={"sum": 3})
    out = render_result(structured)
    assert out.text == '{"sum": 3}' and out.data == {"sum": 3}
    image = types.CallToolResult(content=[types.ImageContent(type="image", data="AA==",
                                                             mime_type="image/png")])
    assert render_result(image).text == "[image content (image/png)]"


def test_tools_get_the_server_prefix() -> None:
    conn = MCPConnection(ServerSpec("srv", argv=["x"]))
    tool = MCPTool(conn, RemoteTool("echo", "Echoes", {"type": "object"}), Risk.HIGH)
    assert tool.name == "srv__echo" and tool.risk is Risk.HIGH and not tool.sandboxed
    assert tool.spec().to_openai()["function"]["name"] == "srv__echo"


def test_stdio_server_is_launched_inside_bwrap(tmp_path: Path) -> None:
    from bastion.mcp.mount import server_spec
    from bastion.security.sandbox.bwrap import BubblewrapSandbox

    if BubblewrapSandbox.available() is not None:
        pytest.skip("bubblewrap missing")
    cfg = McpServerConfig(name="s", command=["node", "/opt/s/index.js"], mounts=[tmp_path],
                          env={"K": "V"})
    keep: list[object] = []
    bwrap = Config.model_validate({"security": {"sandbox": "bubblewrap"}})  # auto may be gVisor
    spec = server_spec(cfg, bwrap, keep)
    argv = spec.argv or []
    bwrap_at = next(i for i, a in enumerate(argv) if a.endswith("bwrap"))
    assert argv[-2:] == ["node", "/opt/s/index.js"] and "--unshare-all" in argv
    # the variables travel in the launch environment, never on the command line (F5)
    assert "V" not in argv and "--setenv" not in argv and spec.env["K"] == "V"
    assert str(tmp_path) in argv
    assert argv.index(str(tmp_path)) < argv.index("--remount-ro")
    assert bwrap_at < argv.index("--remount-ro")
    none = server_spec(McpServerConfig(name="n", command=["true"], sandbox="none"), Config(), [])
    assert none.argv is not None and none.argv[0].endswith("true")


def test_config_needs_exactly_one_transport() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        McpServerConfig(name="x")
    with pytest.raises(ValidationError, match="exactly one"):
        McpServerConfig(name="x", command=["a"], url="http://h/mcp")
    with pytest.raises(ValidationError):
        McpServerConfig(name="bad name", command=["a"])

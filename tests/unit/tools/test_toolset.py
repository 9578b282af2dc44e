"""Toolsets: tools added and removed as one (the browser tools, plugin tool families)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.tools.base import ToolContext, tool
from bastion.tools.builtin.browser import BROWSER_TOOLSET, browser_tools
from bastion.tools.registry import ToolRegistry, Toolset, load_entry_point_tools
from tests.fakes.plugin import install_plugin


@tool()
async def alone(ctx: ToolContext) -> str:
    """A tool outside any toolset."""
    return "x"


def test_a_toolset_is_added_and_removed_as_one() -> None:
    registry = ToolRegistry([alone])
    registry.add_toolset(browser_tools())
    assert sorted(registry.toolset(BROWSER_TOOLSET)) == sorted(t.name for t in browser_tools())
    removed = registry.remove_toolset(BROWSER_TOOLSET)
    assert len(removed) == 6 and registry.names() == ["alone"]
    assert registry.remove_toolset(BROWSER_TOOLSET) == []


def test_filtered_keeps_only_the_named_tools() -> None:
    only = browser_tools().filtered(["browser_read", "browser_navigate"])
    assert {t.name for t in only} == {"browser_read", "browser_navigate"}
    assert only.name == BROWSER_TOOLSET


def test_a_plugin_toolset_registers_through_the_entry_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "demo_tools",
                   "from bastion.tools.base import ToolContext, tool\n"
                   "from bastion.tools.registry import Toolset\n"
                   "@tool()\n"
                   "async def demo_ping(ctx: ToolContext) -> str:\n"
                   "    \"\"\"Answer pong.\"\"\"\n"
                   "    return 'pong'\n"
                   "def tools():\n"
                   "    return Toolset('demo', (demo_ping,))\n",
                   "[bastion.tools]\ndemo = demo_tools:tools\n")
    registry = load_entry_point_tools(ToolRegistry())
    assert registry.toolset("demo") == ["demo_ping"]
    assert isinstance(browser_tools(), Toolset)

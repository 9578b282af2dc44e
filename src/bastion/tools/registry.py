"""The tool registry: built-ins and plugins register through the ``bastion.tools`` entry point."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points

from bastion.errors import ToolNotFoundError
from bastion.messages import ToolSpec
from bastion.tools.base import Tool

ENTRY_POINT_GROUP = "bastion.tools"


class ToolRegistry:
    """Named tools; toolsets (MCP servers, plugins) add to it the same way built-ins do."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, tool: Tool, *, replace: bool = False) -> None:
        """Register ``tool``; names are unique unless ``replace``."""
        if tool.name in self._tools and not replace:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def remove(self, name: str) -> None:
        """Unregister a tool (no error if absent)."""
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool:
        """Return the tool called ``name``."""
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise ToolNotFoundError(
                f"unknown tool {name!r}", fix=f"use one of: {known}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._tools)

    def specs(self, names: Iterable[str] | None = None) -> list[ToolSpec]:
        """Return the specs of all (or the named) tools."""
        chosen = self._tools.values() if names is None else [self.get(n) for n in names]
        return [t.spec() for t in chosen]


def load_entry_point_tools(registry: ToolRegistry) -> ToolRegistry:
    """Add every tool advertised under the ``bastion.tools`` entry-point group.

    An entry point may name a :class:`Tool`, an iterable of tools, or a zero-argument
    callable returning either.
    """
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if callable(obj) and not isinstance(obj, Tool):
            obj = obj()
        items = [obj] if isinstance(obj, Tool) else list(obj)
        for item in items:
            if item.name not in registry:
                registry.add(item)
    return registry

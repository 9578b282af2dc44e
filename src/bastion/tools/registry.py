"""The tool registry: built-ins and plugins register through the ``bastion.tools`` entry point."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from bastion.errors import ToolNotFoundError
from bastion.messages import ToolSpec
from bastion.tools.base import Tool

ENTRY_POINT_GROUP = "bastion.tools"


@dataclass(frozen=True, slots=True)
class Toolset:
    """Tools that come and go together under one name (the browser tools, a plugin's tools).

    Iterating a toolset yields its tools, so code that takes a list of tools takes one too.
    """

    name: str
    tools: tuple[Tool, ...]
    #: Releases what the tools need (an MCP server's connection); ``None``: nothing to release.
    closer: Callable[[], None] | None = field(default=None, compare=False)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools)

    def filtered(self, only: Iterable[str]) -> Toolset:
        """Return the toolset with only the named tools (closing it closes this one)."""
        keep = set(only)
        return Toolset(self.name, tuple(t for t in self.tools if t.name in keep), self.closer)

    def close(self) -> None:
        """Release what the tools need (see :attr:`closer`)."""
        if self.closer is not None:
            self.closer()


class ToolRegistry:
    """Named tools; toolsets (MCP servers, plugins) add to it the same way built-ins do."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._toolsets: dict[str, list[str]] = {}
        for t in tools:
            self.add(t)

    def add_toolset(self, toolset: Toolset, *, replace: bool = False) -> None:
        """Register every tool of ``toolset`` and remember them under its name."""
        for tool in toolset:
            self.add(tool, replace=replace)
        self._toolsets.setdefault(toolset.name, []).extend(t.name for t in toolset)

    def remove_toolset(self, name: str) -> list[str]:
        """Unregister the tools of toolset ``name``; return their names (none if absent)."""
        names = self._toolsets.pop(name, [])
        for tool_name in names:
            self.remove(tool_name)
        return names

    def toolset(self, name: str) -> list[str]:
        """Return the names of the registered tools of toolset ``name``."""
        return [n for n in self._toolsets.get(name, []) if n in self._tools]

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
        except KeyError as exc:
            known = ", ".join(sorted(self._tools)) or "none"
            raise ToolNotFoundError(
                f"unknown tool {name!r}", fix=f"use one of: {known}"
            ) from exc

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

    An entry point may name a :class:`Tool`, an iterable of tools, a :class:`Toolset`, an
    iterable of toolsets, or a zero-argument callable returning one of them.
    """
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if callable(obj) and not isinstance(obj, Tool):
            obj = obj()
        items = [obj] if isinstance(obj, Tool | Toolset) else list(obj)
        for item in items:
            if isinstance(item, Toolset):
                registry.add_toolset(item.filtered(t.name for t in item if t.name not in registry))
            elif item.name not in registry:
                registry.add(item)
    return registry

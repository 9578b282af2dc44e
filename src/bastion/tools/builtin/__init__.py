"""The built-in tools, registered through the ``bastion.tools`` entry point like any plugin.

The core tools are one list (:func:`builtin_tools`); a tool family (tools added and removed as
one, like the browser tools) is a module with a function returning its :class:`Toolset`, named
by one line in :data:`FAMILIES`. :func:`builtin_toolsets` is the entry point and the source-tree
fallback alike, so adding a family touches two files: its module and that line.
"""

from __future__ import annotations

import shutil

from bastion.config.backends import load_object
from bastion.tools.base import Tool
from bastion.tools.builtin.exec import node, python, shell
from bastion.tools.builtin.files import list_files, read_file, write_file
from bastion.tools.builtin.web import web_fetch
from bastion.tools.registry import Toolset

#: The built-in tool families: ``"module:function"`` returning a :class:`Toolset`.
FAMILIES: list[str] = [
    "bastion.tools.builtin.browser:browser_tools",
]


def builtin_tools() -> list[Tool]:
    """Return the built-in tools: files, shell, python, node (if installed) and web_fetch."""
    code = [shell, python] + ([node] if shutil.which("node") else [])
    return [list_files, read_file, write_file, *code, web_fetch]


def builtin_toolsets() -> list[Toolset]:
    """Return the core tools as the ``builtin`` toolset, then every family in :data:`FAMILIES`."""
    out = [Toolset("builtin", tuple(builtin_tools()))]
    for target in FAMILIES:
        make = load_object(target)
        family = make() if callable(make) else make
        if not isinstance(family, Toolset):
            raise TypeError(f"{target} did not return a Toolset")
        out.append(family)
    return out


__all__ = ["FAMILIES", "builtin_tools", "builtin_toolsets"]

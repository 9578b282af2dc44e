"""The built-in tools, registered through the ``bastion.tools`` entry point like any plugin."""

from __future__ import annotations

from bastion.tools.base import Tool
from bastion.tools.builtin.exec import python, shell
from bastion.tools.builtin.files import list_files, read_file, write_file
from bastion.tools.builtin.web import web_fetch


def builtin_tools() -> list[Tool]:
    """Return the built-in tools: files, shell, python and web_fetch."""
    return [list_files, read_file, write_file, shell, python, web_fetch]


__all__ = ["builtin_tools"]

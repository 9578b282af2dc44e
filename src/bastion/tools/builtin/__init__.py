"""The built-in tools, registered through the ``bastion.tools`` entry point like any plugin."""

from __future__ import annotations

import shutil

from bastion.tools.base import Tool
from bastion.tools.builtin.exec import node, python, shell
from bastion.tools.builtin.files import list_files, read_file, write_file
from bastion.tools.builtin.web import web_fetch


def builtin_tools() -> list[Tool]:
    """Return the built-in tools: files, shell, python, node (if installed) and web_fetch."""
    code = [shell, python] + ([node] if shutil.which("node") else [])
    return [list_files, read_file, write_file, *code, web_fetch]


__all__ = ["builtin_tools"]

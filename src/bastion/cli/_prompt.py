"""Yes/no questions that never hang or crash without a terminal."""

from __future__ import annotations

import sys

import typer

from bastion.errors import ConfigError


def confirm(question: str, *, yes: bool, fix: str, default: bool = False) -> bool:
    """Ask ``question`` at the terminal; ``yes`` answers it. Without a terminal, refuse.

    ``fix`` is the command to run instead (usually the same one with ``--yes``).
    """
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(f"{question.rstrip('?')}: this needs a yes, and there is no terminal "
                          "to ask", fix=fix)
    return typer.confirm(question, default=default, err=True)

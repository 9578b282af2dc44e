"""Semantic risk of code arguments: shell through tree-sitter-bash, Python through ``ast``.

A regex over the command text is easy to get around (``"rm" -rf``, ``r\\m``, ``x=rm; $x``,
``base64 -d | sh``). So the command is parsed: command names are resolved through quoting
and escapes, wrappers (``sudo``, ``env``, ``xargs``, ``timeout`` ...) are looked through,
``sh -c``/``python -c``/``eval`` strings and here-documents are analysed recursively, and what
cannot be known statically (a command name from a variable or a substitution, code piped into
an interpreter, input that does not parse) is at least HIGH. Each finding carries its level:
CRITICAL for destructive forms, HIGH for risky or opaque ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bastion.tools.base import Risk

SANDBOX_WORKSPACE = "/workspace"  # where every sandbox mounts the workspace (its cwd)
_MAX_DEPTH = 6  # nested sh -c / eval / exec strings analysed; deeper is opaque (HIGH)
_DEVNULL = {"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"}


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason a piece of code is risky, with the level it raises the call to."""

    level: Risk
    reason: str


def _inside(path: str, workspace: Path) -> bool:
    if path in _DEVNULL:
        return True
    if path.startswith("~"):
        return False
    if path == SANDBOX_WORKSPACE or path.startswith(SANDBOX_WORKSPACE + "/"):
        rel = path[len(SANDBOX_WORKSPACE):].lstrip("/")
        full = os.path.normpath(os.path.join(str(workspace), rel))
    else:
        full = os.path.normpath(os.path.join(str(workspace), path))
    ws = os.path.normpath(str(workspace))
    return full == ws or full.startswith(ws + os.sep)


def _host_path(path: str, workspace: Path) -> Path:
    if path == SANDBOX_WORKSPACE or path.startswith(SANDBOX_WORKSPACE + "/"):
        return workspace / path[len(SANDBOX_WORKSPACE):].lstrip("/")
    return workspace / path


def _existing_file(path: str, workspace: Path) -> bool:
    if not _inside(path, workspace) or path in _DEVNULL:
        return False
    try:
        return _host_path(path, workspace).is_file()
    except OSError:
        return False

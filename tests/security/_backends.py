"""The real sandbox backends the breach tests attack (skipped where one cannot run, not in CI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bastion.config.model import LimitsConfig
from bastion.security.sandbox.factory import BACKENDS, create_sandbox
from tests._dockerd import backend_problem, needs_backend


def problem(kind: str) -> str | None:
    """Return why backend ``kind`` cannot run here (None when it can; docker: own daemon)."""
    return backend_problem(kind)


def each_backend() -> Any:
    """Parametrize a test over every backend; one that cannot run is skipped outside CI."""
    params = [pytest.param(kind, marks=[pytest.mark.needs_root, needs_backend(kind)], id=kind)
              for kind in BACKENDS]
    return pytest.mark.parametrize("kind", params)


def make(kind: str, ws: Path, **limits: Any) -> Any:
    """Return a real sandbox of ``kind`` on ``ws`` (asserting it can be built)."""
    box, why = create_sandbox(kind, ws, LimitsConfig(**{"wall_seconds": 60, **limits}))
    assert box is not None, why
    return box


def host_files(ws: Path) -> list[tuple[str, int, int]]:
    """Return ``(relative path, host uid, mode)`` of everything in ``ws`` (links not followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(ws):
        for name in (*dirnames, *filenames):
            st = os.lstat(os.path.join(dirpath, name))
            out.append((os.path.relpath(os.path.join(dirpath, name), ws), st.st_uid,
                        st.st_mode))
    return out

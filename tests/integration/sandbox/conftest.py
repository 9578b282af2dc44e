"""Fixtures for tests against real sandbox backends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def leftover_processes(marker: str) -> list[int]:
    """Return pids whose command line contains ``marker`` (a run's processes that survived)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if marker.encode() in cmd:
            found.append(int(entry))
    return found


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    ws = tmp_path / "workspace"
    ws.mkdir()
    yield ws

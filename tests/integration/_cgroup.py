"""Real memory limits for tests: a memory cgroup (v1 controller) under this process's own.

``memory_cgroup(limit)`` makes one for a command to run in (the way a container or a systemd
unit limits bastion); ``confine(pid, limit)`` moves a running process into one, so the next
memory it takes is charged there (what it already holds stays charged where it was) and a
small limit gets it killed by the kernel's out-of-memory killer, a real OOM kill. Tests skip,
with the reason, where no writable memory controller exists (not root, cgroup v2 only).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BASE = Path("/sys/fs/cgroup/memory")


def _own() -> Path:
    own = next((ln.split(":", 2)[2] for ln in Path("/proc/self/cgroup").read_text().splitlines()
                if ln.split(":")[1] == "memory"), None)
    if own is None or os.geteuid() != 0 or not (BASE / own.lstrip("/")).is_dir():
        pytest.skip("no writable cgroup v1 memory controller here (needs root and "
                    "/sys/fs/cgroup/memory): a memory limit cannot be set")
    return BASE / own.lstrip("/")


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Path]:
    """A child of this process's memory cgroup limited to ``limit`` bytes (removed after)."""
    parent = _own()
    group = parent / f"bastion-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup here: {exc}")
    try:
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():  # survivors go back
            with contextlib.suppress(OSError):
                (parent / "cgroup.procs").write_text(pid)
        for _ in range(100):  # processes that just died leave it a moment later
            with contextlib.suppress(OSError):
                group.rmdir()
                break
            time.sleep(0.05)


@contextlib.contextmanager
def confine(pid: int, limit: int) -> Iterator[Path]:
    """Move process ``pid`` into a new memory cgroup of ``limit`` bytes for the block."""
    with memory_cgroup(limit) as group:
        (group / "cgroup.procs").write_text(str(pid))
        yield group

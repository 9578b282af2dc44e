"""A per-run ``pids`` cgroup: the process-count limit that still holds when bastion runs as root.

``RLIMIT_NPROC`` is not enforced for processes whose real uid is host root (the kernel
exempts ``INIT_USER``), and a root-run bwrap maps the sandbox user to host root. A pids
cgroup caps the whole tree regardless of uid and lets us kill every member at the end.
When no writable pids controller exists (an unprivileged desktop user), callers rely on
``RLIMIT_NPROC`` inside the user namespace, which is enforced for non-root users.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import uuid
from pathlib import Path

_V1 = Path("/sys/fs/cgroup/pids")
_V2 = Path("/sys/fs/cgroup")
_PARENT = "bastion-sandbox"


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def _find_root() -> tuple[Path, int] | None:
    if _writable(_V1) and (_V1 / "cgroup.procs").exists():
        return _V1, 1
    ctrl = _V2 / "cgroup.controllers"
    if ctrl.exists() and "pids" in ctrl.read_text().split() and _writable(_V2):
        return _V2, 2
    return None


@functools.cache
def pids_root() -> tuple[Path, int] | None:
    """Return (parent directory, cgroup version) for sandbox cgroups, or None if unusable."""
    found = _find_root()
    if found is None:
        return None
    base, version = found
    parent = base / _PARENT
    try:
        parent.mkdir(exist_ok=True)
        if version == 2:
            with contextlib.suppress(OSError):
                (base / "cgroup.subtree_control").write_text("+pids")
            (parent / "cgroup.subtree_control").write_text("+pids")
    except OSError:
        return None
    return parent, version


class PidsCgroup:
    """One cgroup with ``pids.max`` for one sandboxed process tree."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        """Create a fresh group capped at ``max_pids``; None where cgroups are unusable."""
        root = pids_root()
        if root is None:
            return None
        parent, version = root
        path = parent / uuid.uuid4().hex[:16]
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_pids))
        except OSError:
            return None
        return cls(path, version)

    def procs_fd(self) -> int:
        """Open ``cgroup.procs`` for writing (the child writes ``0`` to join before exec)."""
        return os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def hit_limit(self) -> bool:
        """Return whether a fork was refused because of ``pids.max``."""
        try:
            text = (self.path / "pids.events").read_text()
        except OSError:
            return False
        return any(line.split()[-1] != "0" for line in text.splitlines() if line.strip())

    def kill_all(self) -> None:
        """SIGKILL every process still in the group."""
        if self.version == 2 and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
            return
        for _ in range(3):  # processes may fork while we kill; pids.max bounds the rounds
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                return
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def try_remove(self) -> bool:
        """Kill what is left and try to remove the group; False while members still exit."""
        self.kill_all()
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

"""Per-run cgroups: a ``pids`` cap that holds when bastion runs as root, and a CPU-time meter.

``RLIMIT_NPROC`` is not enforced for processes whose real uid is host root (the kernel
exempts ``INIT_USER``), and a root-run bwrap maps the sandbox user to host root. A pids
cgroup caps the whole tree regardless of uid and lets us kill every member at the end.
When no writable pids controller exists (an unprivileged desktop user), callers rely on
``RLIMIT_NPROC`` inside the user namespace, which is enforced for non-root users.

:class:`CpuMeter` measures the CPU time a whole tree has used (``cpuacct.usage`` on cgroup
v1, ``cpu.stat`` ``usage_usec`` on v2, else the summed ``/proc`` times of the tree's
process tree), for backends whose own kernel does not enforce ``RLIMIT_CPU`` (gVisor 2022).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import uuid
from pathlib import Path

_V1 = Path("/sys/fs/cgroup/pids")
_V1_MEM = Path("/sys/fs/cgroup/memory")
_V1_CPU = (Path("/sys/fs/cgroup/cpuacct"), Path("/sys/fs/cgroup/cpu,cpuacct"))
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


@functools.cache
def memory_root() -> tuple[Path, int] | None:
    """Return (parent directory, version) for per-run memory cgroups, or None if unusable."""
    if _writable(_V1_MEM) and (_V1_MEM / "memory.limit_in_bytes").exists():
        parent = _V1_MEM / _PARENT
        try:
            parent.mkdir(exist_ok=True)
        except OSError:
            return None
        return parent, 1
    pids = pids_root()
    if pids is None or pids[1] != 2:
        return None
    try:  # v2: the per-run pids group also gets memory.max
        for base in (_V2, pids[0]):
            (base / "cgroup.subtree_control").write_text("+memory")
    except OSError:
        return None
    return pids[0], 2


class MemoryCgroup:
    """A memory bound for one whole process tree (RLIMIT_AS only bounds each process).

    On cgroup v2 the limit is written into the run's pids group (``memory.max``); on v1
    it is a group of its own in the memory hierarchy. Swap is bounded too where the
    kernel accounts it, so the tree cannot page its way around the limit.
    """

    def __init__(self, path: Path, version: int, own: bool) -> None:
        self.path = path
        self.version = version
        self.own = own  # a v1 group we created (and remove); v2 shares the pids group

    @classmethod
    def create(cls, limit_bytes: int, pids: PidsCgroup | None) -> MemoryCgroup | None:
        """Return a group capping the tree at ``limit_bytes``; None where not possible."""
        root = memory_root()
        if root is None:
            return None
        parent, version = root
        try:
            if version == 2:
                if pids is None or pids.version != 2:
                    return None
                (pids.path / "memory.max").write_text(str(limit_bytes))
                with contextlib.suppress(OSError):
                    (pids.path / "memory.swap.max").write_text("0")
                return cls(pids.path, 2, own=False)
            path = parent / uuid.uuid4().hex[:16]
            path.mkdir()
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
        except OSError:
            return None
        return cls(path, 1, own=True)

    def procs_fd(self) -> int | None:
        """Open the v1 group's ``cgroup.procs`` for the child to join (v2: the pids group)."""
        if not self.own:
            return None
        return os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def oom_killed(self) -> bool:
        """Return whether the kernel killed a member for exceeding the limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self.path / name).read_text()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip() != "0":
                return True
        return False

    def kill_all(self) -> None:
        """SIGKILL every member (v1; on v2 the pids group does it)."""
        if self.own:
            PidsCgroup(self.path, 1).kill_all()

    def try_remove(self) -> bool:
        """Remove the v1 group once empty; False while members still exit."""
        if not self.own:
            return True
        return PidsCgroup(self.path, 1).try_remove()


@functools.cache
def cpuacct_root() -> Path | None:
    """Return the parent directory for cgroup-v1 CPU accounting groups, or None."""
    for base in _V1_CPU:
        if _writable(base) and (base / "cpuacct.usage").exists():
            parent = base / _PARENT
            try:
                parent.mkdir(exist_ok=True)
            except OSError:
                continue
            return parent
    return None


def _tree_cpu_seconds(root: int) -> float:
    """Sum user+system time (own and reaped children's) of ``root`` and its descendants.

    By parentage, not session: runsc's sentry starts a session of its own.
    """
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the name: state (field 3), ppid (4), ... utime..cstime (14..17)
        if len(fields) > 14:
            pid = int(entry)
            children.setdefault(int(fields[1]), []).append(pid)
            times[pid] = sum(int(f) for f in fields[11:15])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total / tick


class CpuMeter:
    """CPU seconds used by one process tree since it started.

    Backed by a cgroup (exact, includes exited members) where one is writable, else by
    the ``/proc`` times of the tree (members that exited unreaped are missed).
    """

    def __init__(self, usage_file: Path | None, group: Path | None, unit: float,
                 root_pid: int | None = None) -> None:
        self.usage_file = usage_file
        self.group = group  # a cgroup we created and must remove (v1 cpuacct)
        self.unit = unit
        self.root_pid = root_pid

    @classmethod
    def create(cls, pids: PidsCgroup | None) -> CpuMeter:
        """Return a meter for a tree joining ``pids`` (v2: the same group) or a new v1 group."""
        if pids is not None and pids.version == 2 and (pids.path / "cpu.stat").exists():
            return cls(pids.path / "cpu.stat", None, 1e-6)
        parent = cpuacct_root()
        if parent is not None:
            path = parent / uuid.uuid4().hex[:16]
            try:
                path.mkdir()
            except OSError:
                pass
            else:
                return cls(path / "cpuacct.usage", path, 1e-9)
        return cls(None, None, 1.0)

    def procs_fd(self) -> int | None:
        """Open the v1 group's ``cgroup.procs`` for the child to join, if there is one."""
        if self.group is None:
            return None
        return os.open(self.group / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def seconds(self) -> float:
        """Return the CPU seconds used so far (0 when nothing can be read)."""
        if self.usage_file is None:
            return _tree_cpu_seconds(self.root_pid) if self.root_pid is not None else 0.0
        try:
            text = self.usage_file.read_text()
        except OSError:
            return 0.0
        if self.usage_file.name == "cpu.stat":
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) * self.unit
            return 0.0
        return int(text.strip() or 0) * self.unit

    def kill_all(self) -> None:
        """SIGKILL every member of the v1 accounting group (a second handle on the tree)."""
        if self.group is not None:
            PidsCgroup(self.group, 1).kill_all()

    def try_remove(self) -> bool:
        """Remove the v1 accounting group once empty; False while members still exit."""
        if self.group is None:
            return True
        return PidsCgroup(self.group, 1).try_remove()

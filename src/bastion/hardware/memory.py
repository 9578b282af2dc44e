"""How much memory new processes can still take here, and how many were killed for lack of it.

:func:`room` is what a model may allocate before the kernel's out-of-memory killer steps in:
``MemAvailable`` plus free swap (what Ollama counts too), bounded by the memory cgroup this
process runs in (a container's or a systemd unit's limit, cgroup v2 or v1), which
``/proc/meminfo`` does not show. :func:`oom_kills` reads the kernel's count of out-of-memory kills
(global and cgroup alike, ``/proc/vmstat``), so a ``SIGKILL`` can be told apart from a ``kill -9``.

:class:`OomWatch` does that for one child process. Linux only; elsewhere :func:`room` and
:func:`oom_kills` return None and no kill is named an OOM kill. ``read`` is injectable for tests.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Reader = Callable[[str], "str | None"]
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a huge number (9223372036854771712)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _fields(text: str | None, sep: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.replace(":", " ").split(sep)
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1]) * (1024 if line.rstrip().endswith("kB") else 1)
    return out


@dataclass(frozen=True)
class Room:
    """Bytes a new allocation can take, and where the bound comes from."""

    bytes: int
    available: int  # MemAvailable + SwapFree
    cgroup_limit: int | None = None  # the memory cgroup's limit, where there is one

    def describe(self) -> str:
        """``22.9 GiB available`` (``..., within this cgroup's 1.0 GiB limit``)."""
        text = f"{gib(self.bytes)} available"
        if self.cgroup_limit is not None and self.bytes < self.available:
            text += f" (within this cgroup's {gib(self.cgroup_limit)} limit)"
        return text


def gib(n: int) -> str:
    """Bytes in the unit a reader wants: ``720 MiB``, ``11.3 GiB``."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{max(1, round(n / 2**20))} MiB"


def _cgroup_room(read: Reader) -> tuple[int, int] | None:
    """(limit, room) of the tightest memory cgroup over this process, or None without one."""
    groups = read("/proc/self/cgroup") or ""
    best: tuple[int, int] | None = None
    for line in groups.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":  # cgroup v2: walk up, the tightest limit wins
            base = _mount("cgroup2", read)
            parts = [p for p in path.split("/") if p]
            for depth in range(len(parts), -1, -1):
                here = "/".join([base or "/sys/fs/cgroup", *parts[:depth]])
                limit = (read(f"{here}/memory.max") or "").strip()
                if not limit.isdigit():
                    continue
                used = int((read(f"{here}/memory.current") or "0").strip() or 0)
                stat = _fields(read(f"{here}/memory.stat"), " ")
                left = int(limit) - max(0, used - stat.get("inactive_file", 0))
                if best is None or left < best[1]:
                    best = (int(limit), left)
        elif "memory" in controllers.split(","):  # cgroup v1: the hierarchy's limit
            base = _mount("memory", read) or "/sys/fs/cgroup/memory"
            here = base + path.rstrip("/")
            stat = _fields(read(f"{here}/memory.stat"), " ")
            v1_limit = stat.get("hierarchical_memory_limit", _NO_LIMIT)
            if v1_limit >= _NO_LIMIT:
                continue
            used = int((read(f"{here}/memory.usage_in_bytes") or "0").strip() or 0)
            left = v1_limit - max(0, used - stat.get("total_inactive_file", 0))
            if best is None or left < best[1]:
                best = (v1_limit, left)
    return best


def _mount(kind: str, read: Reader) -> str | None:
    """Where the cgroup2 hierarchy (``cgroup2``) or a v1 controller (``memory``) is mounted."""
    for line in (read("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        fs = right.split()
        if not fs:
            continue
        point = left.split()[4] if len(left.split()) > 4 else ""
        if kind == "cgroup2" and fs[0] == "cgroup2":
            return point
        if kind != "cgroup2" and fs[0] == "cgroup" and kind in (fs[-1] if len(fs) > 2 else ""
                                                               ).split(","):
            return point
    return None


def room(read: Reader = _read) -> Room | None:
    """Return the memory a new process may take here (None where the kernel does not say)."""
    info = _fields(read("/proc/meminfo"))
    if "MemAvailable" not in info:
        return None
    available = info["MemAvailable"] + info.get("SwapFree", 0)
    group = _cgroup_room(read)
    if group is None:
        return Room(available, available)
    limit, left = group
    return Room(max(0, min(available, left)), available, limit)


def oom_kills(read: Reader = _read) -> int | None:
    """How many processes the kernel's out-of-memory killer has killed since boot."""
    return _fields(read("/proc/vmstat"), " ").get("oom_kill")


OOM_KILLED = "by the kernel's out-of-memory killer"


class OomWatch:
    """Tells an out-of-memory kill of a child from any other ``SIGKILL``.

    Made when the child starts; :meth:`killed` is true when the child died of ``SIGKILL`` and
    the kernel's count of out-of-memory kills rose meanwhile (the count is system-wide: another
    process killed for memory at the same moment would be blamed too, which is rare and still
    points at a machine out of memory).
    """

    def __init__(self, read: Reader = _read) -> None:
        """Read the kernel's count now."""
        self._read = read
        self.start = oom_kills(read)

    def killed(self, returncode: int) -> bool:
        """Whether a child that ended with ``returncode`` was killed for lack of memory."""
        if returncode != -signal.SIGKILL or self.start is None:
            return False
        now = oom_kills(self._read)
        return now is not None and now > self.start

"""How many threads a worker's decode step runs on: the cores shared by the workers busy now.

K worker processes share the machine's cores. A fixed share (``cores // K`` each) leaves a
lone conversation on a fraction of the CPU: on 2 cores with K=2 its prompt ran on one thread
(first token 111 ms against 64 ms with llama.cpp's defaults). So each step's thread count
follows the number of workers that have work at that moment, read from a :class:`BusyBoard`:
one byte per worker in one page of memory the pool creates and every worker maps. A worker
sets its byte while it has jobs and clears it when it goes idle; the parent clears the byte of
a worker that died (a crash never leaves a stale "busy"). One byte per worker, written only by
its owner, needs no lock and no atomic increment, and a torn read is impossible.

With ``busy`` workers busy, each gets ``cores // busy`` threads (at least one; for generation
steps at most its share of the physical cores: :func:`threads_for`). A lone conversation gets
every core. What a worker read from the board may be stale by the time its step runs (two
workers starting together both read "alone"), so each step also holds the cores it runs on
(:class:`CoreLeases`): K workers never run more threads than there are cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import tempfile

PAGE = mmap.PAGESIZE


def threads_for(cores: int, busy: int, *, prompt: bool, physical: int | None = None) -> int:
    """Threads for one decode step when ``busy`` workers (this one included) share ``cores``.

    Prompt steps take the whole share; generation steps too, but no more threads than the
    share's physical cores (``physical``: the machine's physical cores; default ``cores``),
    as llama.cpp's default of one generation thread per physical core does (two threads on
    one core's hyperthreads only wait for each other). With :class:`CoreLeases` a step never
    runs more threads than the cores its worker holds, so no halving against oversubscription
    is needed: on 2 cores one sequence generates 80 tokens/s on both against 46 on one.
    """
    share = max(1, cores // max(1, busy))
    if prompt:
        return share
    phys = cores if physical is None else max(1, min(physical, cores))
    return max(1, min(share, phys // max(1, busy)))


def physical_cores() -> int:
    """The physical cores among the CPUs this process may run on (hyperthreads counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1
    seen = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as f1, open(base + "core_id") as f2:
                seen.add((f1.read().strip(), f2.read().strip()))
        except OSError:
            seen.add(("cpu", str(cpu)))
    return max(1, len(seen))


class BusyBoard:
    """One byte per worker in shared memory: 1 while that worker has work, else 0."""

    def __init__(self, fd: int, size: int, *, owner: bool) -> None:
        """Map ``fd`` (``size`` workers); ``owner``: this process created it (closes the fd)."""
        if not 1 <= size <= PAGE:
            raise ValueError(f"a board holds 1 to {PAGE} workers, not {size}")
        self.fd = fd
        self.size = size
        self._owner = owner
        self._map = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def create(cls, size: int) -> BusyBoard:
        """Make a new board for ``size`` workers (an anonymous memory file, all idle)."""
        if not 1 <= size <= PAGE:
            raise ValueError(f"a board holds 1 to {PAGE} workers, not {size}")
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("bastion-busy", os.MFD_CLOEXEC)
        else:  # pragma: no cover - macOS: an unlinked temporary file does the same
            fd, name = tempfile.mkstemp(prefix="bastion-busy-")
            os.unlink(name)
        os.ftruncate(fd, PAGE)
        return cls(fd, size, owner=True)

    def set(self, index: int, busy: bool) -> None:
        """Mark worker ``index`` busy or idle."""
        self._map[index] = 1 if busy else 0

    def count(self) -> int:
        """How many workers are busy now."""
        return sum(self._map[: self.size])

    def close(self) -> None:
        """Unmap (and close the file where this process created it)."""
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()
        if self._owner:
            with contextlib.suppress(OSError):
                os.close(self.fd)


# Byte-range locks far past the board's page: one per core (the bytes need not exist).
_CORE_LOCKS = 1 << 20


class CoreLeases:
    """The machine's cores as locks that the workers take for each decode step.

    A step runs on as many threads as the cores its worker holds, so the workers together
    never run more threads than there are cores, whatever each read from the board: two
    workers that started at the same moment could both have read "alone" and run ggml's
    spinning thread teams over each other's cores, where a step slows 20-60x (a prompt that
    takes 40 ms took 2.5 s). Each core is a POSIX record lock on a byte of the board's memory
    file (``fcntl.lockf``): per process, released by the kernel when a worker dies, so a crash
    never leaves a core taken. A worker waits (blocking) only for its first core while it
    holds none, and takes more only without waiting, so two workers never deadlock.
    """

    def __init__(self, fd: int, cores: int, home: int) -> None:
        """Lease from ``fd`` (the pool's board); ``home``: the core this worker waits for."""
        self.fd = fd
        self.cores = max(1, cores)
        self.home = home % self.cores
        self.held: list[int] = []

    def _try(self, core: int, wait: bool) -> bool:
        flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.lockf(self.fd, flags, 1, _CORE_LOCKS + core, os.SEEK_SET)
        except OSError:  # taken (EAGAIN/EACCES), or the wait refused (EDEADLK, EINTR)
            return False
        self.held.append(core)
        return True

    def take(self, want: int) -> int:
        """Hold between one and ``want`` cores (waiting for one when none is free); how many."""
        want = max(1, min(want, self.cores))
        order = [(self.home + i) % self.cores for i in range(self.cores)]
        for core in order:
            if len(self.held) >= want:
                break
            self._try(core, wait=False)
        if not self.held:
            self._try(self.home, wait=True)
        # a wait the kernel refused: run on one thread unleased rather than not at all
        return max(1, len(self.held))

    def give_back(self) -> None:
        """Release every core held (after the step)."""
        for core in self.held:
            with contextlib.suppress(OSError):
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, _CORE_LOCKS + core, os.SEEK_SET)
        self.held = []

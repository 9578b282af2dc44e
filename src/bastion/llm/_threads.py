"""How many threads a worker's decode step runs on: the cores shared by the workers busy now.

K worker processes share the machine's cores. A fixed share (``cores // K`` each) leaves a
lone conversation on a fraction of the CPU: on 2 cores with K=2 its prompt ran on one thread
(first token 111 ms against 64 ms with llama.cpp's defaults). So each step's thread count
follows the number of workers that have work at that moment, read from a :class:`BusyBoard`:
one byte per worker in one page of memory the pool creates and every worker maps. A worker
sets its byte while it has jobs and clears it when it goes idle; the parent clears the byte of
a worker that died (a crash never leaves a stale "busy"). One byte per worker, written only by
its owner, needs no lock and no atomic increment, and a torn read is impossible.

With ``busy`` workers busy, each gets ``cores // busy`` threads (at least one): all of it for
steps with a prompt chunk, half of it for generation steps, as llama.cpp's defaults do for one
process (:func:`threads_for`). A lone conversation gets every core; K busy workers never
oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile

PAGE = mmap.PAGESIZE


def threads_for(cores: int, busy: int, *, prompt: bool) -> int:
    """Threads for one decode step when ``busy`` workers (this one included) share ``cores``."""
    share = max(1, cores // max(1, busy))
    return share if prompt else max(1, share // 2)


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

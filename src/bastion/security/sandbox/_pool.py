"""A warm pool: sandboxes started ahead of time, each waiting for one command.

Each pooled sandbox is already inside its namespaces, limits and cgroup, running a tiny
waiter (Python, started while idle) that reads one request line -- the argv and environment
-- byte by byte from stdin, then ``exec``\\ s the command with the rest of stdin left for it.
So a call pays for writing one line instead of for bwrap (or podman) and the interpreter
starting. A pooled sandbox serves exactly one call; the pool refills in the background once
the call is over (never while it runs). Pools
are tied to the event loop that filled them; another loop gets fresh, cold runs. A backend
whose sandboxes outlive their host process (podman's containers) passes ``release``, called
with every pooled sandbox the pool throws away, and ``final=True`` when the pool closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

from bastion.errors import SandboxError
from bastion.security.sandbox._proc import Spawned, discard

# Standard library core only (``os``): the podman image has python3-minimal, without json.
# The request: 8 hex digits of length, then argc, argv and KEY=VALUE items, NUL-separated;
# read exactly (never past it: the rest of stdin belongs to the command).
WAITER_READ = (  # shared with the FIFO waiter (_fifo.py): read the request
    "import os,_signal as g\n"
    # Python ignores SIGPIPE and SIGXFSZ; the command must get the default actions back
    "for n in (g.SIGPIPE,g.SIGXFSZ): g.signal(n,g.SIG_DFL)\n"
    "os.write(1,b'\\0')\n"
    "def r(n):\n"
    "    b=b''\n"
    "    while len(b)<n:\n"
    "        c=os.read(0,n-len(b))\n"
    "        if not c: raise SystemExit(0)\n"
    "        b+=c\n"
    "    return b\n"
    "p=r(int(r(8),16)).split(b'\\0')\n"
    "n=int(p[0])\n"
)
WAITER = (
    WAITER_READ +
    "os.environb.clear(); os.environb.update(x.split(b'=',1) for x in p[n+1:])\n"
    "os.execvp(p[1], p[1:n+1])\n"
)


def request_line(argv: list[str], env: Mapping[str, str]) -> bytes:
    """Return the request a waiter reads (argv and environment of the command)."""
    items = [str(len(argv)), *argv, *(f"{k}={v}" for k, v in env.items())]
    if any("\0" in i for i in items):
        raise SandboxError("a command or environment value contains a NUL byte")
    payload = "\0".join(items).encode()
    return f"{len(payload):08x}".encode() + payload


class WarmPool:
    """Keeps up to ``size`` pre-started sandboxes for one backend instance."""

    def __init__(self, size: int, start: Callable[[], Awaitable[Spawned]],
                 release: Callable[[list[Spawned], bool], None] | None = None) -> None:
        self.size = size
        self._start = start
        self._release = release
        self._ready: list[Spawned] = []
        self._filling: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None

    def take(self) -> Spawned | None:
        """Return a live pre-started sandbox of the running loop, or None (then run cold).

        It does not refill: the backend calls :meth:`refill` once its call is over. Starting
        a sandbox (fork and exec in the event loop, bwrap's setup, the waiter's interpreter)
        while the call runs would compete with it for the loop and the CPU -- on a warm
        bubblewrap call that was two thirds of the time (bench/gateway.py).
        """
        loop = asyncio.get_running_loop()
        while self._ready:
            item = self._ready.pop(0)
            if item.loop is loop and item.proc.returncode is None:
                return item
            if item.loop is loop:
                asyncio.ensure_future(discard(item))
            self._let_go([item])
        return None

    def refill(self) -> None:
        """Start topping the pool up in the background (after a call, see :meth:`take`)."""
        self._refill_soon()

    def _let_go(self, items: list[Spawned], final: bool = False) -> None:
        if self._release is not None and (items or final):
            with contextlib.suppress(Exception):
                self._release(items, final)

    def _refill_soon(self) -> None:
        if self.size and (self._filling is None or self._filling.done()):
            self._filling = asyncio.ensure_future(self.fill())

    async def fill(self) -> None:
        """Start sandboxes until ``size`` are waiting (one filler at a time)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            loop = asyncio.get_running_loop()
            gone = [i for i in self._ready if i.loop is not loop or i.proc.returncode is not None]
            self._ready[:] = [i for i in self._ready if i not in gone]
            self._let_go(gone)
            while len(self._ready) < self.size:
                self._ready.append(await self._start())

    async def close(self) -> None:
        """Kill every waiting sandbox."""
        if self._filling is not None and not self._filling.done():
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._filling
        ready, self._ready = self._ready, []
        loop = asyncio.get_running_loop()
        for item in ready:
            if item.loop is loop:
                await discard(item)
            else:
                with contextlib.suppress(ProcessLookupError):
                    item.proc.kill()
        if self._release is not None:
            await asyncio.to_thread(self._let_go, ready, True)

    def shutdown(self) -> None:
        """Kill every waiting sandbox without an event loop (at app close)."""
        ready, self._ready = self._ready, []
        if self._filling is not None and not self._filling.done():
            self._filling.cancel()
        for item in ready:
            with contextlib.suppress(ProcessLookupError):
                item.proc.kill()
            if item.cgroup is not None:
                item.cgroup.try_remove()
        self._let_go(ready, final=True)

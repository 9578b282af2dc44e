"""A warm pool: sandboxes started ahead of time, each waiting for one command.

Each pooled sandbox is already inside its namespaces, limits and cgroup, running a tiny
waiter (Python, started while idle) that reads one request line -- the argv and environment
-- byte by byte from stdin, then ``exec``\\ s the command with the rest of stdin left for it.
So a call pays for writing one line instead of for bwrap and the interpreter starting. A
pooled sandbox serves exactly one call; the pool refills in the background. Pools are tied
to the event loop that filled them; another loop gets fresh, cold runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping

from bastion.security.sandbox._proc import Spawned, discard

WAITER = (
    "import os,json\n"
    "os.write(1,b'\\0')\n"
    "b=b''\n"
    "while not b.endswith(b'\\n'):\n"
    "    c=os.read(0,1)\n"
    "    if not c: raise SystemExit(0)\n"
    "    b+=c\n"
    "r=json.loads(b)\n"
    "os.environ.clear(); os.environ.update(r['env'])\n"
    "os.execvp(r['argv'][0], r['argv'])\n"
)


def request_line(argv: list[str], env: Mapping[str, str]) -> bytes:
    """Return the one line a waiter reads."""
    return json.dumps({"argv": argv, "env": dict(env)}).encode() + b"\n"


class WarmPool:
    """Keeps up to ``size`` pre-started sandboxes for one backend instance."""

    def __init__(self, size: int, start: Callable[[], Awaitable[Spawned]]) -> None:
        self.size = size
        self._start = start
        self._ready: list[Spawned] = []
        self._filling: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None

    def take(self) -> Spawned | None:
        """Return a live pre-started sandbox of the running loop, or None (then run cold)."""
        loop = asyncio.get_running_loop()
        while self._ready:
            item = self._ready.pop(0)
            if item.loop is loop and item.proc.returncode is None:
                self._refill_soon()
                return item
            if item.loop is loop:
                asyncio.ensure_future(discard(item))
        self._refill_soon()
        return None

    def _refill_soon(self) -> None:
        if self.size and (self._filling is None or self._filling.done()):
            self._filling = asyncio.ensure_future(self.fill())

    async def fill(self) -> None:
        """Start sandboxes until ``size`` are waiting (one filler at a time)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            loop = asyncio.get_running_loop()
            self._ready[:] = [i for i in self._ready
                              if i.loop is loop and i.proc.returncode is None]
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

"""Warm calls whose output reaches bastion through FIFOs, not the sandbox's own stdio.

A pooled sandbox (podman container or bubblewrap waiter) runs :data:`FIFO_WAITER`. A call
writes the request and its stdin to the waiter's stdin; the waiter forks the command with
stdout and stderr on FIFOs in a host directory bound into the sandbox at :data:`IO_MOUNT`,
and writes the exit status to a third FIFO. bastion holds a writer on each output FIFO
until the status arrives (so reading before the command opened its end sees no EOF), then
reads to the end: one round trip per call. Only the command (and what it starts) holds the
output FIFOs, so the call ends the moment the command does -- not after the sandbox's own
processes (podman's conmon, bubblewrap's init and monitor) have noticed, each a process
wake-up that costs milliseconds on a busy machine. Background processes the command leaves
are killed when the sandbox is torn down after the call, as in a cold run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from bastion.security.sandbox import _running
from bastion.security.sandbox._pool import WAITER_READ
from bastion.security.sandbox._proc import Spawned, exit_reason
from bastion.tools.base import ProcessResult

IO_MOUNT = "/run/bastion-io"  # inside the sandbox: the FIFOs and the status file
# The waiter (python3-minimal has ``os`` only). It reads the request from its stdin, then
# forks the command with stdout/stderr on the FIFOs the host holds open (stdin: the rest of
# the waiter's own), waits, and writes the exit status to the status FIFO.
FIFO_WAITER = (
    WAITER_READ +
    f"d='{IO_MOUNT}/'\n"
    "pid=os.fork()\n"
    "if pid==0:\n"
    "    try:\n"
    "        fds=[os.open(d+'out',os.O_WRONLY),os.open(d+'err',os.O_WRONLY)]\n"
    "        for i,fd in enumerate(fds): os.dup2(fd,i+1)\n"
    "        for fd in fds:\n"
    "            if fd>2: os.close(fd)\n"
    "        os.environb.clear(); os.environb.update(x.split(b'=',1) for x in p[n+1:])\n"
    "        os.execvp(p[1],p[1:n+1])\n"
    "    except OSError as e:\n"
    "        os.write(2,('sandbox: '+str(e)+'\\n').encode())\n"
    "    os._exit(127)\n"
    "c=os.waitstatus_to_exitcode(os.waitpid(pid,0)[1])\n"
    "f=os.open(d+'status',os.O_WRONLY)\n"
    "os.write(f,str(c).encode()+b'\\n'); os.close(f)\n"
)




def make_io(prefix: str, uid: int, gid: int) -> Path:
    """Create a private directory with the out/err/status FIFOs, owned by the sandbox's user."""
    io = Path(tempfile.mkdtemp(prefix=prefix))
    for name in ("out", "err", "status"):
        os.mkfifo(io / name, 0o600)
    for path in (io, *io.iterdir()):
        os.chown(path, uid, gid)  # the sandbox's user opens them
    return io


async def drive_fifos(warm: Spawned, io: Path, header: bytes, stdin: bytes | None,
                      wall: float, output_bytes: int, kill: Callable[[], Awaitable[Any]],
                      label: Mapping[str, str]) -> tuple[ProcessResult, bool]:
    """Drive one call through a waiter's FIFOs; return the result and whether it ended cleanly.

    ``kill`` ends the sandbox (at the deadline or on too much output). Not clean: the caller
    must make sure the sandbox is gone before reusing anything of it.
    """
    start = time.perf_counter()
    deadline = start + wall
    loop = asyncio.get_running_loop()
    held: list[int] = []
    transports: list[asyncio.BaseTransport] = []
    reason: str | None = None
    out, err = bytearray(), bytearray()
    total = 0
    overflow = False
    code: int | None = None
    state = _running.track(warm.proc.pid, warm.cgroup.path if warm.cgroup else None, label)

    async def reader(name: str) -> asyncio.StreamReader:
        fd = os.open(io / name, os.O_RDONLY | os.O_NONBLOCK)
        stream = asyncio.StreamReader(limit=2**20)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(fd, "rb", 0))
        transports.append(transport)
        return stream

    try:
        status = await reader("status")
        streams = [await reader("out"), await reader("err")]
        held = [os.open(io / name, os.O_WRONLY | os.O_NONBLOCK) for name in ("out", "err")]
        full = asyncio.Event()

        async def pump(stream: asyncio.StreamReader, buf: bytearray) -> None:
            nonlocal total, overflow
            while chunk := await stream.read(65_536):
                room = output_bytes - total
                if len(chunk) > room:
                    chunk, overflow = chunk[: max(room, 0)], True
                buf += chunk
                total += len(chunk)
                if overflow:
                    full.set()
                    return

        pumps: asyncio.Future[Any] = asyncio.gather(pump(streams[0], out),
                                                    pump(streams[1], err))
        writer = warm.proc.stdin
        assert writer is not None

        async def feed_stdin() -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                writer.write(header + (stdin or b""))
                await writer.drain()
            writer.close()

        feed = asyncio.ensure_future(feed_stdin())
        status_line = asyncio.ensure_future(status.readline())
        full_wait: asyncio.Future[Any] = asyncio.ensure_future(full.wait())
        done, _ = await asyncio.wait({status_line, full_wait},
                                     timeout=max(deadline - time.perf_counter(), 0.01),
                                     return_when=asyncio.FIRST_COMPLETED)
        if status_line in done:  # the command has ended: read what it wrote to the end
            code = _status(status_line.result())
            for fd in held:
                os.close(fd)
            held = []
            done, _ = await asyncio.wait({pumps, full_wait},
                                         timeout=max(deadline - time.perf_counter(), 0.01),
                                         return_when=asyncio.FIRST_COMPLETED)
        full_wait.cancel()
        if pumps not in done:
            reason = "output" if overflow else "timeout"
            await kill()  # kills the tree; the FIFOs reach EOF
            pumps.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pumps
        for task in (status_line, feed):
            task.cancel()
    finally:
        _running.untrack(state)
        for fd in held:
            os.close(fd)
        for t in transports:
            t.close()
    clean = reason is None
    if code is None:
        code = -9
        reason = reason or "killed"
    reason = reason or exit_reason(code)
    text_err = err.decode("utf-8", "replace")
    if overflow:
        text_err += f"\n[sandbox: output truncated at {output_bytes} bytes]"
    return ProcessResult(
        exit_code=code, stdout=out.decode("utf-8", "replace"), stderr=text_err,
        timed_out=reason == "timeout", killed_reason=reason,
        duration_ms=(time.perf_counter() - start) * 1000,
    ), clean


def _status(line: bytes) -> int | None:
    try:
        return int(line)
    except ValueError:  # the command itself may have written there: not trusted
        return None

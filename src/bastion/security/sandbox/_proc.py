"""Run one confined process tree: output cap, wall-clock and CPU-time kill, pids cgroup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion import telemetry
from bastion.security.sandbox import _running
from bastion.security.sandbox._cgroup import CpuMeter, MemoryCgroup, PidsCgroup
from bastion.telemetry.metrics import METRICS
from bastion.tools.base import ProcessResult

_CHUNK = 65_536
_CPU_POLL_S = 0.05  # how often a CPU budget is checked (the overshoot is at most this)
_SIGNAL_REASONS = {signal.SIGXCPU: "cpu_time", signal.SIGXFSZ: "file_size"}


@dataclass(slots=True)
class _Capture:
    limit: int
    total: int = 0
    overflow: bool = False

    def take(self, buf: bytearray, chunk: bytes) -> None:
        room = self.limit - self.total
        if len(chunk) > room:
            chunk = chunk[: max(room, 0)]
            self.overflow = True
        buf += chunk
        self.total += len(chunk)


def exit_reason(code: int) -> str | None:
    """Map a process exit status (signal or shell-style 128+N) to a limit name."""
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    try:
        return _SIGNAL_REASONS.get(signal.Signals(sig))
    except ValueError:
        return None


@dataclass(slots=True)
class Spawned:
    """A started process tree (fresh, or pre-started for the warm pool)."""

    proc: asyncio.subprocess.Process
    cgroup: PidsCgroup | None
    max_pids: int | None
    loop: asyncio.AbstractEventLoop
    cpu: CpuMeter | None = None
    tag: Any = None  # the backend's own handle (e.g. gVisor's container id and bundle)
    memory: MemoryCgroup | None = None


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin_pipe: bool,
    max_pids: int | None = None,
    cwd: str | None = None,
    cpu_meter: bool = False,
    memory_bytes: int | None = None,
    pass_fds: Sequence[int] = (),
    preexec: Callable[[], None] | None = None,
    umask: int = -1,
) -> Spawned:
    """Start ``argv`` in its own session and (where possible) its own pids cgroup.

    With ``cpu_meter`` the tree's CPU time is also measured (see :class:`CpuMeter`), so
    :func:`drive` can enforce a CPU budget on the whole tree. With ``memory_bytes`` the
    whole tree's memory is capped by a memory cgroup (where one is writable). ``preexec``
    runs in the child after it joined its cgroups, just before exec.
    """
    cgroup = PidsCgroup.create(max_pids) if max_pids else None
    meter = CpuMeter.create(cgroup) if cpu_meter else None
    memory = MemoryCgroup.create(memory_bytes, cgroup) if memory_bytes else None
    fds = [fd for fd in (cgroup.procs_fd() if cgroup else None,
                         meter.procs_fd() if meter else None,
                         memory.procs_fd() if memory else None) if fd is not None]
    procs_fd = fds[0] if fds else None

    def join_cgroup() -> None:  # runs in the child between fork and exec
        if umask >= 0:  # here, not Popen's umask=: uvloop (under uvicorn) rejects that kwarg
            os.umask(umask)
        for fd in fds:
            os.write(fd, b"0")
        if preexec is not None:
            preexec()

    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=join_cgroup
            if procs_fd is not None or preexec is not None or umask >= 0 else None,
            pass_fds=tuple(pass_fds),
        )
    except BaseException:
        if cgroup is not None:
            await _remove(cgroup)
        if meter is not None:
            await _remove(meter)
        if memory is not None:
            await _remove(memory)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    if meter is not None:
        meter.root_pid = proc.pid  # the /proc fallback sums this process's tree
    return Spawned(proc, cgroup, max_pids, asyncio.get_running_loop(), meter, memory=memory)


async def drive(
    spawned: Spawned,
    *,
    stdin: bytes | None,
    wall_seconds: float,
    output_bytes: int,
    label: Mapping[str, str] | None = None,
    header: bytes | None = None,
    cpu_seconds: float | None = None,
) -> ProcessResult:
    """Feed, capture and bound a spawned tree until it ends or is killed; then clean up.

    ``header`` is written before ``stdin`` (a warm sandbox's request). With ``cpu_seconds``
    (and a tree spawned with a CPU meter) the tree is killed as ``cpu_time`` once it has
    used that much CPU from now on. Never raises for the child's failures; a cancelled
    caller kills the tree too.
    """
    start = time.perf_counter()
    proc, cgroup, max_pids = spawned.proc, spawned.cgroup, spawned.max_pids
    meter = spawned.cpu if cpu_seconds is not None else None
    capture = _Capture(output_bytes)
    out, err = bytearray(), bytearray()
    reason: str | None = None
    pids_hit = False
    oom = False
    state: Path | None = None
    try:
        if label is not None:
            state = _running.track(proc.pid, cgroup.path if cgroup else None, label)
        overflow = asyncio.Event()

        async def pump(stream: asyncio.StreamReader | None, buf: bytearray) -> None:
            if stream is None:
                return
            while chunk := await stream.read(_CHUNK):
                if not capture.overflow:
                    capture.take(buf, chunk)
                    if capture.overflow:
                        overflow.set()

        async def feed() -> None:
            if proc.stdin is None:
                return
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if header:
                    proc.stdin.write(header)
                if stdin:
                    proc.stdin.write(stdin)
                await proc.stdin.drain()
                proc.stdin.close()

        io: asyncio.Future[Any] = asyncio.gather(
            pump(proc.stdout, out), pump(proc.stderr, err), feed()
        )
        overflow_wait: asyncio.Future[Any] = asyncio.ensure_future(overflow.wait())
        waits = {io, overflow_wait}
        cpu_wait: asyncio.Future[Any] | None = None
        if meter is not None and cpu_seconds is not None:
            cpu_wait = asyncio.ensure_future(_cpu_spent(meter, cpu_seconds))
            waits.add(cpu_wait)
        done, _ = await asyncio.wait(waits, timeout=wall_seconds,
                                     return_when=asyncio.FIRST_COMPLETED)
        if io not in done:
            reason = ("output" if overflow_wait in done else
                      "cpu_time" if cpu_wait is not None and cpu_wait in done else "timeout")
            _kill(proc, cgroup, meter)
        overflow_wait.cancel()
        if cpu_wait is not None:
            cpu_wait.cancel()
        # After a kill, the pipes close once every member of the tree is gone.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(io, timeout=5)
        await proc.wait()
    finally:
        if state is not None:
            _running.untrack(state)
        if proc.returncode is None:
            _kill(proc, cgroup, spawned.cpu)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
        if spawned.memory is not None:
            oom = spawned.memory.oom_killed()
            await _remove(spawned.memory)
        if cgroup is not None:
            pids_hit = cgroup.hit_limit()
            await _remove(cgroup)
        if spawned.cpu is not None:
            await _remove(spawned.cpu)
    code = proc.returncode if proc.returncode is not None else -9
    reason = reason or exit_reason(code)
    stderr = err.decode("utf-8", "replace")
    if capture.overflow:
        stderr += f"\n[sandbox: output truncated at {output_bytes} bytes]"
    if pids_hit:
        stderr += f"\n[sandbox: process limit ({max_pids}) reached; forks were refused]"
    if oom:
        reason = reason or "memory"
        stderr += "\n[sandbox: memory limit reached; the kernel killed a process]"
    return ProcessResult(
        exit_code=code,
        stdout=out.decode("utf-8", "replace"),
        stderr=stderr,
        timed_out=reason == "timeout",
        killed_reason=reason,
        duration_ms=(time.perf_counter() - start) * 1000,
    )


async def run_tree(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: bytes | None,
    wall_seconds: float,
    output_bytes: int,
    max_pids: int | None = None,
    cwd: str | None = None,
    label: Mapping[str, str] | None = None,
    memory_bytes: int | None = None,
    pass_fds: Sequence[int] = (),
    preexec: Callable[[], None] | None = None,
) -> ProcessResult:
    """Run ``argv`` in its own session (and pids cgroup), killing the tree at the deadline."""
    backend = (label or {}).get("backend", "process")
    t0 = time.perf_counter()
    with telemetry.span("sandbox.start", {"bastion.sandbox.backend": backend}):
        spawned = await spawn(argv, env=env, stdin_pipe=stdin is not None, max_pids=max_pids,
                              cwd=cwd, memory_bytes=memory_bytes, pass_fds=pass_fds,
                              preexec=preexec)
    METRICS.sandbox_start.observe(time.perf_counter() - t0, backend=backend)
    return await drive(spawned, stdin=stdin, wall_seconds=wall_seconds,
                       output_bytes=output_bytes, label=label)


async def discard(spawned: Spawned) -> None:
    """Kill a spawned tree that will not be used and clean up after it."""
    _kill(spawned.proc, spawned.cgroup, spawned.cpu)
    with contextlib.suppress(ProcessLookupError):
        await spawned.proc.wait()
    if spawned.memory is not None:
        await _remove(spawned.memory)
    if spawned.cgroup is not None:
        await _remove(spawned.cgroup)
    if spawned.cpu is not None:
        await _remove(spawned.cpu)


async def _cpu_spent(meter: CpuMeter, budget: float) -> None:
    """Return once the tree has used ``budget`` CPU seconds more than when called."""
    base = await asyncio.to_thread(meter.seconds) if meter.usage_file is None else meter.seconds()
    while True:
        await asyncio.sleep(_CPU_POLL_S)
        used = (await asyncio.to_thread(meter.seconds) if meter.usage_file is None
                else meter.seconds())
        if used - base >= budget:
            return


def _kill(proc: asyncio.subprocess.Process, cgroup: PidsCgroup | None,
          meter: CpuMeter | None = None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if cgroup is not None:
        cgroup.kill_all()
    if meter is not None:
        meter.kill_all()


async def _remove(cgroup: PidsCgroup | CpuMeter | MemoryCgroup) -> None:
    for _ in range(100):
        if cgroup.try_remove():
            return
        await asyncio.sleep(0.01)

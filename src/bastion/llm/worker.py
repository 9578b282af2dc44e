"""The embedded model behind supervised worker processes (the default for ``backend: embedded``).

``slots`` conversations are served at once by ``workers`` (K) child processes
(:mod:`bastion.llm._worker`); each holds one llama.cpp context with its share of the slots
(slots/K parallel sequences), decoded together in one batch per step (continuous batching,
:mod:`bastion.llm._batch`, as ``llama-server --parallel`` does). A conversation's model step
leases one sequence for its whole choose/fill/answer protocol (so the prompt prefix stays cached
in that sequence's KV cache) on the least busy worker, so conversations that run at the same
time land on different processes where K allows; a request that finds every slot busy waits in
a FIFO queue (fair: first come, first served). Each decode step runs on the cores shared by
the workers busy at that moment (``cores // busy``, at least one; generation steps at most one
thread per physical core; :mod:`bastion.llm._threads`), and on no more than the cores it holds
for that step (core leases: record locks the kernel frees when a worker dies), so two workers
that start together never run ggml's spinning thread teams over each other's cores. A lone
conversation gets every core; K busy workers together never oversubscribe them.

Supervision, per worker:
- a worker that dies (segfault, abort, out-of-memory kill) ends the requests it was serving
  (its sequences in flight, never those of the other workers), each with :class:`WorkerCrashed`
  (``the local model crashed (signal 11, SIGSEGV)``) as soon as its pipe closes; a replacement
  is started at once and serves the next requests;
- three crashes of one worker within a minute switch that worker to a safe mode (no repacked
  weight buffers, one thread) once; a crash in safe mode marks it broken: its sequences are no
  longer leased, and when every worker is broken each request gets one clear error instead of
  a crash loop.

The worker gets a minimal environment (no API tokens or secrets), its own session (Ctrl-C in a
terminal does not reach it) and dies with the parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bastion._proc import (
    CRASH_LIMIT,
    CRASH_WINDOW_S,
    CrashLoop,
    child_env,
    describe_exit,
)
from bastion.errors import ModelError
from bastion.hardware import memory
from bastion.llm._constrained import DEFAULT_POLICY, Plain, Policy
from bastion.llm._threads import BusyBoard
from bastion.llm.convert import Choice
from bastion.llm.embedded import (
    SHIPPED_NAME,
    collect,
    primitive_chat,
    repack_default,
    shipped_model_path,
)
from bastion.llm.footprint import CONFIG_SET, Note, Plan, Shape, plan
from bastion.llm.native_build import SIGILL_FIX
from bastion.messages import ChatSettings, Finish, Message, ModelEvent, ToolSpec, Usage
from bastion.telemetry.metrics import METRICS

CRASHES_BEFORE_SAFE_MODE = CRASH_LIMIT  # within CRASH_WINDOW_S
LOAD_TIMEOUT_S = 600.0
STALL_TIMEOUT_S = 300.0  # no progress at all for this long while serving = hung


class WorkerCrashed(ModelError):
    """The model worker process died while serving a request."""

    def __init__(self, returncode: int, stderr_tail: str = "", *, oom: bool = False) -> None:
        """Describe a worker exit status (negative = killed by that signal).

        ``oom``: the kernel's out-of-memory killer killed it (its count rose while the worker
        ran and it died of SIGKILL).
        """
        self.returncode = returncode
        self.signal = -returncode if returncode < 0 else None
        self.oom = oom
        sig = describe_exit(returncode)
        hint = f" last output: {stderr_tail}" if stderr_tail else ""
        if oom:
            super().__init__(
                f"the local model was killed for lack of memory ({sig}, {memory.OOM_KILLED}); "
                "this request is lost, the model was restarted",
                fix="free memory, or make the model smaller: lower model.n_ctx or model.slots, "
                "or use a smaller model (`bastion doctor` shows the memory it needs)",
            )
            return
        super().__init__(
            f"the local model crashed ({sig}); this request is lost, the model was restarted"
            + hint,
            fix=SIGILL_FIX if self.signal == signal.SIGILL else
            "retry the request; if it keeps crashing run `bastion doctor` "
            "(it tests the model in a child process and names the fix)",
        )


class WorkerStalled(ModelError):
    """The model worker made no progress for too long while serving a request; it was killed."""

    def __init__(self, seconds: float) -> None:
        """Say how long the worker was silent."""
        self.seconds = seconds
        super().__init__(
            f"the local model stopped responding (no progress for {seconds:g} s); this request "
            "is lost, the model was restarted",
            fix="retry the request; a very large model on few cores may need more time per "
            "prompt batch: raise model.stall_timeout_s (`bastion config set "
            "model.stall_timeout_s 900`)",
        )


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker loads (sent to the child as its first line)."""

    path: str
    n_ctx: int = 4096
    n_threads: int | None = None
    n_gpu_layers: int = 0
    repack: bool = True
    chat_template: str | None = None
    end_of_turn: str | None = None
    slots: int = 1  # parallel sequences in the worker's context (n_ctx tokens each)
    n_threads_batch: int | None = None  # prompt batches (None: llama-cpp-python's default)
    cores: int = 0  # > 0: each step's threads follow the pool's busy workers out of these

    def safe(self) -> WorkerSpec:
        """Return the same spec without repacked buffers and with one thread."""
        return replace(self, n_threads=1, n_threads_batch=1, repack=False, cores=0)


def auto_workers(slots: int, model_bytes: int, cores: int | None = None,
                 available: int | None = None) -> int:
    """How many worker processes serve ``slots`` sequences when ``model.workers`` is unset.

    One per core up to ``slots`` (each worker decodes its sequences on its own cores: a crash
    costs only its own), fewer where K copies of the model file would take more than half of
    the memory available (with repacked weights every worker holds its own copy; without,
    llama.cpp maps the file and the pages are shared, so this bound is on the safe side).
    """
    k = max(1, min(slots, cores or os.cpu_count() or 1))
    room = getattr(memory.room(), "bytes", None) if available is None else available
    if room is not None and model_bytes > 0:
        k = max(1, min(k, room // 2 // model_bytes))
    return k


def default_slots() -> int:
    """Conversations served at once when ``model.slots`` is unset: one per core, at most 4."""
    return min(4, os.cpu_count() or 1)


def plan_memory(vocab: Any, gguf: Path, *, n_ctx: int, slots: int | None,
                workers: int | None, repack: bool, n_gpu_layers: int = 0,
                settings: Mapping[str, str] = CONFIG_SET) -> Plan:
    """Plan the workers' context and conversations for ``gguf`` (see :mod:`.footprint`).

    ``vocab`` is the vocabulary-only load of the source (its metadata has the shape);
    ``settings`` as in :func:`~bastion.llm.footprint.plan`.
    """
    from bastion.llm import native_build

    try:
        size = gguf.stat().st_size
    except OSError:
        size = 0
    gpu, ignored = native_build.gpu_layers(n_gpu_layers)
    notes = [Note(ignored, native_build.GPU_FIX)] if ignored else []
    return plan(Shape.of(getattr(vocab, "metadata", None) or {}), n_ctx=n_ctx, slots=slots,
                auto_slots=default_slots(), model_bytes=size, repack=repack, workers=workers,
                auto_workers=lambda s: auto_workers(s, size), room=memory.room(),
                gpu_layers=gpu, settings=settings, notes=notes)


def _shares(slots: int, k: int) -> list[int]:
    """Split ``slots`` sequences over ``k`` workers as evenly as possible."""
    return [slots // k + (1 if i < slots % k else 0) for i in range(k)]


class _Sink:
    """Messages for one request, handed from the reader thread to the caller's event loop.

    The worker writes several messages at once (held text pieces); the loop is woken once
    for all that arrive before it runs, not once per message.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.items: collections.deque[dict[str, Any] | None] = collections.deque()
        self.ready = asyncio.Event()
        self._wake_pending = False

    def push(self, msg: dict[str, Any] | None) -> None:  # any thread
        self.items.append(msg)
        if self._wake_pending:  # a wake-up is on its way: it will find this message too
            return
        self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone
            self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:  # on the caller's loop
        self._wake_pending = False
        self.ready.set()

    async def get(self) -> dict[str, Any] | None:
        while not self.items:
            self.ready.clear()
            if self.items:
                break
            await self.ready.wait()
        return self.items.popleft()


@dataclass
class _Worker:
    """One child process; several requests at a time (one per sequence)."""

    spec: WorkerSpec
    # called with its crash (None after a clean close) once the process ended, before any
    # request hears of it; it sets ``worker.crashed`` itself, under the lock that guards the
    # pool's bookkeeping, so that nobody sees the worker gone before its crash is counted
    on_exit: Callable[[_Worker, ModelError | None], None]
    stall_s: Any = lambda: STALL_TIMEOUT_S  # () -> seconds, read at each wait
    board: dict[str, int] | None = None  # the pool's BusyBoard: fd, this worker's index, size
    proc: subprocess.Popen[bytes] = field(init=False)
    loaded: threading.Event = field(default_factory=threading.Event)
    load_error: ModelError | None = None
    n_ctx: int = 0
    stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=8))
    _sinks: dict[int, _Sink] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _wlock: threading.Lock = field(default_factory=threading.Lock)
    crashed: ModelError | None = None  # WorkerCrashed, or WorkerStalled when we killed it
    stalled: WorkerStalled | None = None
    closing: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    oom: memory.OomWatch = field(init=False)  # tells a kill for lack of memory

    def __post_init__(self) -> None:
        self.oom = memory.OomWatch()
        self.proc = subprocess.Popen(  # noqa: S603 - our own module, argv is fixed
            [sys.executable, "-m", "bastion.llm._worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=child_env(), close_fds=True, start_new_session=True,
            pass_fds=(self.board["fd"],) if self.board else (),
        )
        self._send({**asdict(self.spec), "board": self.board})
        threading.Thread(target=self._read, name="bastion-model-reader", daemon=True).start()
        threading.Thread(target=self._drain_stderr, name="bastion-model-stderr",
                         daemon=True).start()

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid

    def _send(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
        with self._wlock:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the reader thread reports the exit

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.stderr_tail.append(line[:300])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if "id" not in msg:  # the load answer
                if "error" in msg:
                    self.load_error = ModelError(msg["error"], fix=msg.get("fix"))
                else:
                    self.n_ctx = int(msg.get("n_ctx", 0))
                    self.info = msg
                self.loaded.set()
                continue
            sink = self._sinks.get(int(msg["id"]))
            if sink is not None:
                sink.push(msg)
        rc = self.proc.wait()
        crash: ModelError | None = None
        if self.stalled is not None:
            crash = self.stalled
        elif not self.closing and self.load_error is None:
            tail = " | ".join(list(self.stderr_tail)[-2:])
            crash = WorkerCrashed(rc, tail, oom=self.oom.killed(rc))
        try:
            self.on_exit(self, crash)  # counted first: a caller that retries at once sees it
        finally:
            if self.crashed is None:  # (on_exit failed before it could say)
                self.crashed = crash
            self.loaded.set()
            for sink in list(self._sinks.values()):
                sink.push(None)

    async def wait_loaded(self) -> None:
        """Wait until the model is loaded; raise its load error or the crash."""
        if not self.loaded.is_set():
            await asyncio.to_thread(self.loaded.wait, LOAD_TIMEOUT_S)
        if self.load_error is not None:
            raise self.load_error
        if self.crashed is not None:
            raise self.crashed
        if not self.loaded.is_set():
            raise ModelError("the local model did not finish loading in time",
                             fix="check model.path and free memory (`bastion doctor`)")

    async def _next(self, sink: _Sink) -> dict[str, Any] | None:
        """Return the request's next message; kill the worker if none comes in ``stall_s()``."""
        if sink.items:  # already here (several come in one write): no timer needed
            return sink.items.popleft()
        try:
            seconds = float(self.stall_s())
            return await asyncio.wait_for(sink.get(), seconds)
        except TimeoutError:
            if self.proc.poll() is None and self.stalled is None:
                self.stalled = WorkerStalled(seconds)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()  # SIGKILL also ends a stopped process
            return await sink.get()  # the reader pushes None once the process is gone

    async def call(self, req: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Send one request; yield its messages until its end (raise on error or crash)."""
        await self.wait_loaded()
        rid = next(self._ids)
        sink = _Sink()
        self._sinks[rid] = sink
        ended = False
        try:
            self._send({**req, "id": rid})
            while True:
                msg = await self._next(sink)
                if msg is not None and "hb" in msg:
                    continue
                if msg is None:
                    assert self.crashed is not None
                    ended = True
                    raise self.crashed
                if "error" in msg:
                    ended = True
                    raise ModelError(msg["error"], fix=msg.get("fix"))
                if msg.get("end"):
                    ended = True
                    yield msg
                    return
                yield msg
        finally:
            if not ended and self.crashed is None:  # abandoned mid-way: stop it, wait for its end
                self._send({"op": "cancel", "id": rid})
                while (msg := await self._next(sink)) is not None and not msg.get("end"):
                    pass
            self._sinks.pop(rid, None)

    def close(self) -> None:
        """End the process (closing stdin lets it finish; kill after a grace period)."""
        self.closing = True
        with self._wlock, contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Lease:
    """One sequence of the worker, held for one model step: the constrained primitives.

    The sequence's KV cache keeps the step's shared prompt prefix between calls.
    """

    prefill = True

    def __init__(self, worker: _Worker, seq: int) -> None:
        self.worker = worker
        self.seq = seq

    def _call(self, req: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        return self.worker.call({**req, "seq": self.seq})

    async def complete(
        self, messages: Plain, *, schema: dict[str, Any] | None, max_tokens: int, prefix: str = ""
    ) -> tuple[str, Usage]:
        """Return one greedy completion, constrained to ``schema`` when given."""
        return await collect(self._gen(messages, max_tokens, 0.0, schema, prefix, None, ()))

    async def score(
        self, messages: Plain, prefix: str, options: Sequence[str]
    ) -> list[float] | None:
        """Return each option's log-probability after the prompt."""
        req = {"op": "score", "messages": messages, "prefix": prefix, "options": list(options)}
        async with contextlib.aclosing(self._call(req)) as msgs:  # its end before the lease's
            async for msg in msgs:
                if "scores" in msg:
                    return [float(x) for x in msg["scores"]]
        return None

    def stream(
        self, messages: Plain, settings: ChatSettings
    ) -> AsyncIterator[str | Usage | Finish]:
        """Stream a free-text reply."""
        return self._gen(messages, settings.max_tokens, settings.temperature, None, "",
                         settings.seed, settings.stop)

    async def _gen(
        self, messages: Plain, max_tokens: int, temperature: float,
        schema: dict[str, Any] | None, prefix: str, seed: int | None, stop: Sequence[str],
    ) -> AsyncIterator[str | Usage | Finish]:
        req = {"op": "gen", "messages": messages, "prefix": prefix, "schema": schema,
               "max_tokens": max_tokens, "temperature": temperature, "seed": seed,
               "stop": list(stop)}
        async for msg in self._call(req):
            if "t" in msg:
                yield str(msg["t"])
            elif "usage" in msg:
                yield Usage(int(msg["usage"][0]), int(msg["usage"][1]))
            elif "finish" in msg:
                yield Finish(str(msg["finish"]))


@dataclass
class _Member:
    """One worker process of the pool: its sequences, its crash history, its safe mode."""

    index: int
    spec: WorkerSpec
    free: collections.deque[int]
    crashes: CrashLoop
    worker: _Worker | None = None
    safe_mode: bool = False
    broken: ModelError | None = None


class WorkerModel:
    """A :class:`bastion.llm.base.Model` whose llama.cpp runs in supervised child processes."""

    prefill = True

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        name: str = SHIPPED_NAME,
        slots: int = 1,
        workers: int | None = None,
        policy: Policy = DEFAULT_POLICY,
        tokenizer: Any = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
    ) -> None:
        """Prepare the model (the workers start on first use).

        Args:
            spec: What each worker loads (``slots`` and threads are set per worker here).
            name: The model's name in events and the API.
            slots: How many conversations are served at the same time (parallel sequences,
                spread over the workers).
            workers: How many worker processes share the slots (at most ``slots``); None =
                :func:`auto_workers`.
            policy: Knobs of the constrained tool-calling decision.
            tokenizer: An in-process vocabulary-only engine for :meth:`count_tokens` (optional).
            stall_timeout_s: Seconds without progress after which a serving worker is hung
                (the attribute of the same name may be changed at any time).

        """
        self.slots = max(1, slots)
        if workers is None:
            try:
                size = Path(spec.path).stat().st_size
            except OSError:
                size = 0
            workers = auto_workers(self.slots, size)
        self.workers = max(1, min(workers, self.slots))
        cores = os.cpu_count() or 1
        if spec.n_threads is None:  # llama.cpp's defaults for the cores the busy workers share
            share = max(1, cores // self.workers)  # (what each gets while all are busy)
            spec = replace(spec, n_threads=max(1, share // 2), n_threads_batch=share,
                           cores=cores)
        elif spec.n_threads_batch is None:
            spec = replace(spec, n_threads_batch=spec.n_threads)
        self._board = BusyBoard.create(self.workers) if spec.cores and self.workers > 1 else None
        self.spec = replace(spec, slots=self.slots)
        self._members = [
            _Member(i, replace(spec, slots=n), collections.deque(range(n)),
                    CrashLoop(CRASHES_BEFORE_SAFE_MODE, CRASH_WINDOW_S))
            for i, n in enumerate(_shares(self.slots, self.workers))
        ]
        self.name = name
        self.policy = policy
        self.stall_timeout_s = stall_timeout_s
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self._waiters: collections.deque[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[tuple[int, int]]]]
        self._waiters = collections.deque()
        self._closed = False
        self._started = False
        self._n_ctx = spec.n_ctx
        self.weights: Choice | None = None  # which file and weight type load() chose, and why
        self.memory: Plan | None = None  # the context and conversations load() planned

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        *,
        name: str = SHIPPED_NAME,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        slots: int | None = 1,
        workers: int | None = None,
        repack: bool | None = None,
        chat_template: str | None = None,
        end_of_turn: str | None = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
        convert: str = "auto",
    ) -> WorkerModel:
        """Check ``path`` (default: the shipped model) and prepare the workers for it.

        ``convert`` (``model.convert``): ``auto`` loads a small model whose weights llama.cpp
        cannot batch on a CPU from its cached Q8_0 copy (:mod:`bastion.llm.convert`).
        ``slots`` None: :func:`default_slots`, fewer where they would not fit in memory. The
        context and the conversations at once are planned from the file's metadata before
        any worker starts (:func:`bastion.llm.footprint.plan`): a context above the model's
        trained one is lowered to it, and a setting that cannot fit in memory is refused
        (:class:`~bastion.llm.footprint.ContextTooLarge`) instead of crashing a worker.
        """
        from bastion.llm.embedded import _Engine
        from bastion.llm.repack import amx_kernels
        from bastion.llm.source import prepare_source

        source = path or shipped_model_path()
        repack = repack_default() if repack is None else repack
        vocab, choice = prepare_source(source, mode=convert, n_gpu_layers=n_gpu_layers,
                                       repack=repack, amx=amx_kernels(repack))
        gguf = choice.path
        fit = plan_memory(vocab, gguf, n_ctx=n_ctx, slots=slots, workers=workers,
                          repack=repack, n_gpu_layers=n_gpu_layers)
        spec = WorkerSpec(str(gguf), fit.n_ctx, n_threads, n_gpu_layers, repack,
                          chat_template, end_of_turn)
        model = cls(spec, name=name, slots=fit.slots, workers=fit.workers,
                    stall_timeout_s=stall_timeout_s,
                    tokenizer=_Engine(vocab, chat_template, end_of_turn))
        model.weights = choice
        model.memory = fit
        return model

    @property
    def safe_mode(self) -> bool:
        """Whether a worker runs in safe mode after a crash loop."""
        return any(m.safe_mode for m in self._members)

    @property
    def broken(self) -> ModelError | None:
        """The error every request gets once each worker kept crashing in safe mode."""
        if all(m.broken is not None for m in self._members):
            return self._members[0].broken
        return None

    # -- the workers and their sequences ----------------------------------------------------
    def _current(self, m: _Member) -> _Worker:  # under self._lock
        w = m.worker
        if w is None or w.proc.poll() is not None:  # none yet, or it died idle (reader behind)
            spec = m.spec.safe() if m.safe_mode else m.spec
            board = None
            if self._board is not None:
                self._board.set(m.index, False)  # a dead worker's byte may still say busy
                board = {"fd": self._board.fd, "index": m.index, "size": self._board.size}
            w = m.worker = _Worker(spec, lambda w, crash: self._on_exit(m, w, crash),
                                   lambda: self.stall_timeout_s, board)
        return w

    def _on_exit(self, m: _Member, w: _Worker, crash: ModelError | None) -> None:  # reader thread
        with self._lock:
            w.crashed = crash  # with the count below: worker_pids() and safe_mode agree at once
            current = m.worker is w
            if current:
                m.worker = None
                if self._board is not None and not self._closed:
                    self._board.set(m.index, False)  # it cannot clear its own byte any more
            if w.crashed is None or self._closed:
                return
            looping = m.crashes.record()
            if m.safe_mode:
                m.broken = ModelError(
                    f"the local model keeps crashing, also in safe mode ({w.crashed.message})",
                    fix="run `bastion doctor`; try another model file (model.path) or "
                    "model.repack: off, then restart bastion",
                )
                if self.broken is not None:
                    self._fail_waiters(self.broken)
                return
            if looping:
                m.safe_mode = True
                m.crashes.clear()
            if current:
                self._current(m)  # restart at once

    def _fail_waiters(self, err: ModelError) -> None:  # under self._lock
        def fail(fut: asyncio.Future[tuple[int, int]]) -> None:
            if not fut.done():
                fut.set_exception(err)

        METRICS.queue_depth.set(0, model=self.name)
        while self._waiters:
            loop, fut = self._waiters.popleft()
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fail, fut)

    def _take(self) -> tuple[int, int] | None:  # under self._lock
        """Return a free sequence on the least busy worker that is not broken, or None."""
        ready = [m for m in self._members if m.free and m.broken is None]
        if not ready:
            return None
        m = max(ready, key=lambda m: (len(m.free) - m.spec.slots, -m.index))
        return m.index, m.free.popleft()

    async def _acquire(self) -> tuple[int, int]:
        """Take a free sequence (waiting in line, first come first served, when none is)."""
        if self._closed:
            raise ModelError("the model was closed", fix="start bastion again")
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.broken is not None:
                raise self.broken
            got = self._take()
            if got is not None:
                return got
            fut: asyncio.Future[tuple[int, int]] = loop.create_future()
            self._waiters.append((loop, fut))
            METRICS.queue_depth.set(len(self._waiters), model=self.name)
        return await fut

    def _release(self, slot: tuple[int, int]) -> None:
        with self._lock:
            m = self._members[slot[0]]
            while self._waiters and m.broken is None:
                loop, fut = self._waiters.popleft()
                METRICS.queue_depth.set(len(self._waiters), model=self.name)

                def give(fut: asyncio.Future[tuple[int, int]] = fut,
                         slot: tuple[int, int] = slot) -> None:
                    if fut.done():
                        self._release(slot)
                    else:
                        fut.set_result(slot)

                try:
                    loop.call_soon_threadsafe(give)
                    return
                except RuntimeError:  # that loop is closed
                    continue
            m.free.append(slot[1])
            if self._board is not None and len(m.free) == m.spec.slots and not self._closed:
                self._board.set(m.index, False)  # no conversation holds this worker now

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[_Lease]:
        """Hold one sequence (waiting in line when all are busy) for one model step."""
        slot = await self._acquire()
        try:
            with self._lock:
                m = self._members[slot[0]]
                if m.broken is not None:
                    raise m.broken
                if not self._started:  # load every worker now: the next conversation's is ready
                    self._started = True
                    for other in self._members:
                        if other.broken is None:
                            self._current(other)
                w = self._current(m)
            await w.wait_loaded()  # (a starting worker clears its byte before it is ready)
            if w.n_ctx:
                self._n_ctx = w.n_ctx
            with self._lock:
                if self._board is not None and not self._closed:
                    # busy from now on, before the request reaches the worker: requests that
                    # arrive together then find each other's workers busy and share the cores
                    # from their first step, instead of one prompt taking every core while
                    # the other worker waits for one
                    self._board.set(m.index, True)
            yield _Lease(w, slot[1])
        finally:
            self._release(slot)

    def _live(self) -> list[_Worker]:
        with self._lock:
            return [m.worker for m in self._members
                    if m.worker is not None and m.worker.crashed is None]

    def worker_info(self) -> list[dict[str, Any]]:
        """Return what each loaded worker reported (pid, n_ctx, slots, repack, n_threads)."""
        return [dict(w.info) for w in self._live() if w.info]

    def worker_pids(self) -> list[int]:
        """Return the running workers' process ids (for operators and fault-injection tests)."""
        return [w.pid for w in self._live()]

    # -- the Model seam ---------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        """The context length in tokens."""
        return self._n_ctx

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Return how many tokens ``messages`` take in this model's prompt format."""
        from bastion.llm._constrained import plain_messages

        if self._tokenizer is None:
            raise ModelError("this model has no tokenizer loaded", fix="load it with .load()")
        eng = self._tokenizer
        return len(eng.tokens(eng.render(plain_messages(messages))))

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        """Stream one model step on a leased sequence (constrained protocol when tools given)."""
        async with self.lease() as prims:
            async for ev in primitive_chat(prims, self.policy, messages, tools, settings):
                yield ev

    async def complete(
        self, messages: Plain, *, schema: dict[str, Any] | None, max_tokens: int, prefix: str = ""
    ) -> tuple[str, Usage]:
        """One completion on a leased worker (patterns call the primitives directly)."""
        async with self.lease() as prims:
            return await prims.complete(messages, schema=schema, max_tokens=max_tokens,
                                        prefix=prefix)

    async def score(
        self, messages: Plain, prefix: str, options: Sequence[str]
    ) -> list[float] | None:
        """Each option's log-probability, on a leased worker."""
        async with self.lease() as prims:
            return await prims.score(messages, prefix, options)

    def close(self) -> None:
        """Stop the workers (blocking; :meth:`aclose` from async code)."""
        with self._lock:
            self._closed = True
            live = [m.worker for m in self._members if m.worker is not None]
            self._fail_waiters(ModelError("the model was closed", fix="start bastion again"))
        for w in live:
            w.close()
        if self._board is not None:
            self._board.close()

    async def aclose(self) -> None:
        """Stop the workers."""
        await asyncio.to_thread(self.close)

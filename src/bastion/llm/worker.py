"""The embedded model behind supervised worker processes (the default for ``backend: embedded``).

Each worker (:mod:`bastion.llm._worker`) is a child process holding one llama.cpp context. A
model keeps up to ``slots`` of them: a conversation's model step leases one worker for its whole
choose/fill/answer protocol (so the prompt prefix stays cached there), other conversations get
other workers at the same time, and a request that finds every slot busy waits in a FIFO queue
(fair: first come, first served).

Supervision:
- a worker that dies (segfault, abort, out-of-memory kill) ends only the request it was serving,
  with :class:`WorkerCrashed` (``the local model crashed (signal 11, SIGSEGV)``) as soon as its
  pipe closes; a replacement is started at once;
- three crashes within a minute switch the model to a safe mode (no repacked weight buffers, one
  thread) once; a crash in safe mode marks the model broken, and every later request gets one
  clear error instead of a crash loop.

Workers get a minimal environment (no API tokens or secrets), their own session (Ctrl-C in a
terminal does not reach them) and die with the parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bastion._proc import CRASH_LIMIT, CRASH_WINDOW_S, CrashLoop, child_env, describe_exit
from bastion.errors import ModelError
from bastion.llm._constrained import DEFAULT_POLICY, Plain, Policy
from bastion.llm.embedded import (
    SHIPPED_NAME,
    collect,
    primitive_chat,
    repack_default,
    shipped_model_path,
)
from bastion.messages import ChatSettings, Finish, Message, ModelEvent, ToolSpec, Usage
from bastion.telemetry.metrics import METRICS

CRASHES_BEFORE_SAFE_MODE = CRASH_LIMIT  # within CRASH_WINDOW_S
LOAD_TIMEOUT_S = 600.0
STALL_TIMEOUT_S = 300.0  # no progress at all for this long while serving = hung


class WorkerCrashed(ModelError):
    """The model worker process died while serving a request."""

    def __init__(self, returncode: int, stderr_tail: str = "") -> None:
        """Describe a worker exit status (negative = killed by that signal)."""
        self.returncode = returncode
        self.signal = -returncode if returncode < 0 else None
        sig = describe_exit(returncode)
        hint = f" last output: {stderr_tail}" if stderr_tail else ""
        super().__init__(
            f"the local model crashed ({sig}); this request is lost, the model was restarted"
            + hint,
            fix="retry the request; if it keeps crashing run `bastion doctor` "
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

    def safe(self) -> WorkerSpec:
        """Return the same spec without repacked buffers and with one thread."""
        return WorkerSpec(self.path, self.n_ctx, 1, self.n_gpu_layers, False,
                          self.chat_template, self.end_of_turn)


class _Sink:
    """Messages for one request, handed from the reader thread to the caller's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.items: collections.deque[dict[str, Any] | None] = collections.deque()
        self.ready = asyncio.Event()

    def push(self, msg: dict[str, Any] | None) -> None:  # any thread
        self.items.append(msg)
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone
            self.loop.call_soon_threadsafe(self.ready.set)

    async def get(self) -> dict[str, Any] | None:
        while not self.items:
            self.ready.clear()
            if self.items:
                break
            await self.ready.wait()
        return self.items.popleft()


@dataclass
class _Worker:
    """One child process; one request at a time."""

    spec: WorkerSpec
    on_exit: Any
    stall_s: Any = lambda: STALL_TIMEOUT_S  # () -> seconds, read at each wait
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

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own module, argv is fixed
            [sys.executable, "-m", "bastion.llm._worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=child_env(), close_fds=True, start_new_session=True,
        )
        self._send(asdict(self.spec))
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
        if self.stalled is not None:
            self.crashed = self.stalled
        elif not self.closing and self.load_error is None:
            tail = " | ".join(list(self.stderr_tail)[-2:])
            self.crashed = WorkerCrashed(rc, tail)
        self.loaded.set()
        for sink in list(self._sinks.values()):
            sink.push(None)
        self.on_exit(self)

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
        try:
            seconds = float(self.stall_s())
            return await asyncio.wait_for(sink.get(), seconds)
        except TimeoutError:
            if self.proc.poll() is None and self.stalled is None:
                self.stalled = WorkerStalled(seconds)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()  # SIGKILL also ends a stopped process
            return await sink.get()  # the reader pushes None once the process is gone

    async def call(self, req: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
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
    """One worker held for one model step: the constrained protocol's primitives."""

    prefill = True

    def __init__(self, worker: _Worker, threads: Any = lambda: None) -> None:
        self.worker = worker
        self._threads = threads  # () -> [n_threads, n_threads_batch] or None, per request

    def _call(self, req: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        threads = self._threads()
        return self.worker.call(req if threads is None else {**req, "threads": threads})

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
        async for msg in self._call(req):
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


class WorkerModel:
    """A :class:`bastion.llm.base.Model` whose llama.cpp runs in supervised child processes."""

    prefill = True

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        name: str = SHIPPED_NAME,
        slots: int = 1,
        policy: Policy = DEFAULT_POLICY,
        tokenizer: Any = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
    ) -> None:
        """Prepare the pool (workers start on first use).

        Args:
            spec: What each worker loads.
            name: The model's name in events and the API.
            slots: How many conversations are served at the same time (one worker each).
            policy: Knobs of the constrained tool-calling decision.
            tokenizer: An in-process vocabulary-only engine for :meth:`count_tokens` (optional).
            stall_timeout_s: Seconds without progress after which a serving worker is hung
                (the attribute of the same name may be changed at any time).

        """
        self.spec = spec
        self.name = name
        self.slots = max(1, slots)
        self.policy = policy
        self.stall_timeout_s = stall_timeout_s
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._idle: collections.deque[_Worker] = collections.deque()
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[_Worker]]]
        self._waiters = collections.deque()
        self._crashes = CrashLoop(CRASHES_BEFORE_SAFE_MODE, CRASH_WINDOW_S)
        self.safe_mode = False
        self.broken: ModelError | None = None
        self._closed = False
        self._n_ctx = spec.n_ctx

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        *,
        name: str = SHIPPED_NAME,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        slots: int = 1,
        repack: bool | None = None,
        chat_template: str | None = None,
        end_of_turn: str | None = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
    ) -> WorkerModel:
        """Check ``path`` (default: the shipped model) and prepare workers for it."""
        from bastion.llm.embedded import _Engine, load_llama

        gguf = path or shipped_model_path()
        vocab = load_llama(gguf, n_ctx=256, n_threads=1, vocab_only=True)
        spec = WorkerSpec(str(gguf), n_ctx, n_threads, n_gpu_layers,
                          repack_default() if repack is None else repack,
                          chat_template, end_of_turn)
        return cls(spec, name=name, slots=slots, stall_timeout_s=stall_timeout_s,
                   tokenizer=_Engine(vocab, chat_template, end_of_turn))

    # -- the pool ---------------------------------------------------------------------------
    def _spawn(self) -> _Worker:  # under self._lock
        spec = self.spec.safe() if self.safe_mode else self.spec
        w = _Worker(spec, self._on_exit, lambda: self.stall_timeout_s)
        self._workers.append(w)
        return w

    def _on_exit(self, w: _Worker) -> None:  # reader thread
        with self._lock:
            if w in self._workers:
                self._workers.remove(w)
            if w in self._idle:
                self._idle.remove(w)
            if w.crashed is None or self._closed:
                return
            looping = self._crashes.record()
            if self.safe_mode:
                self.broken = ModelError(
                    f"the local model keeps crashing, also in safe mode ({w.crashed.message})",
                    fix="run `bastion doctor`; try another model file (model.path) or "
                    "model.repack: off, then restart bastion",
                )
            elif looping:
                self.safe_mode = True
                self._crashes.clear()
            if self.broken is None and (self._waiters or not self._workers):
                self._idle.append(self._spawn())  # restart at once
                self._wake()
            elif self.broken is not None:
                self._fail_waiters(self.broken)

    def _wake(self) -> None:  # under self._lock
        while self._waiters and self._idle:
            loop, fut = self._waiters.popleft()
            METRICS.queue_depth.set(len(self._waiters), model=self.name)
            w = self._idle.popleft()

            def give(fut: asyncio.Future[_Worker] = fut, w: _Worker = w) -> None:
                if fut.done():
                    self._release(w)
                else:
                    fut.set_result(w)

            try:
                loop.call_soon_threadsafe(give)
            except RuntimeError:  # that loop is closed
                self._idle.appendleft(w)

    def _fail_waiters(self, err: ModelError) -> None:  # under self._lock
        def fail(fut: asyncio.Future[_Worker]) -> None:
            if not fut.done():
                fut.set_exception(err)

        METRICS.queue_depth.set(0, model=self.name)
        while self._waiters:
            loop, fut = self._waiters.popleft()
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fail, fut)

    async def _acquire(self) -> _Worker:
        if self._closed:
            raise ModelError("the model was closed", fix="start bastion again")
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.broken is not None:
                raise self.broken
            while self._idle:
                w = self._idle.popleft()
                if w.proc.poll() is None:  # skip one that died idle (its reader is catching up)
                    return w
            if len(self._workers) < self.slots:
                return self._spawn()
            fut: asyncio.Future[_Worker] = loop.create_future()
            self._waiters.append((loop, fut))
            METRICS.queue_depth.set(len(self._waiters), model=self.name)
        return await fut

    def _release(self, w: _Worker) -> None:
        with self._lock:
            if w.crashed is not None or w not in self._workers:
                return
            self._idle.append(w)
            self._wake()

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[_Lease]:
        """Hold one worker (waiting in line when all are busy) for one model step."""
        w = await self._acquire()
        try:
            await w.wait_loaded()
            if w.n_ctx:
                self._n_ctx = w.n_ctx
            yield _Lease(w, lambda: self._threads(w))
        finally:
            self._release(w)

    def _threads(self, w: _Worker) -> list[int] | None:
        """Threads for ``w``'s next request: the CPUs shared by the workers busy now.

        llama.cpp's defaults (half the CPUs to generate, all of them for prompts) are right for
        one worker; several busy at once would oversubscribe the cores, so each gets its share.
        None (keep the worker's own setting) when model.n_threads is set or there is one slot.
        """
        if w.spec.n_threads is not None or self.slots == 1:
            return None
        cpus = os.cpu_count() or 1
        with self._lock:
            busy = max(1, len(self._workers) - len(self._idle))
        return [max(1, cpus // 2 // busy), max(1, cpus // busy)]

    def worker_info(self) -> list[dict[str, Any]]:
        """Return what each loaded worker reported (pid, n_ctx, repack, n_threads)."""
        with self._lock:
            return [dict(w.info) for w in self._workers if w.crashed is None and w.info]

    def worker_pids(self) -> list[int]:
        """Return the running workers' process ids (for operators and fault-injection tests)."""
        with self._lock:
            return [w.pid for w in self._workers if w.crashed is None]

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
        """Stream one model step on a leased worker (constrained protocol when tools are given)."""
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
        """Stop every worker (blocking; :meth:`aclose` from async code)."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._fail_waiters(ModelError("the model was closed", fix="start bastion again"))
        for w in workers:
            w.close()

    async def aclose(self) -> None:
        """Stop every worker."""
        await asyncio.to_thread(self.close)

"""The model worker: one llama.cpp context in a child process, driven over a pipe.

``python -m bastion.llm._worker`` is started by :mod:`bastion.llm.worker`. Native code (the
GGUF loader, llama.cpp's kernels, the grammar engine) runs only here, so a segfault, an abort or an
out-of-memory kill costs the requests in flight, never the agent, the API server, pending
approvals or the audit writer (the way Ollama runs its runner).

The context serves ``slots`` sequences at once, decoded together in one batch per step
(continuous batching, :mod:`bastion.llm._batch`); each request names its sequence (``seq``).

Protocol: JSON lines. The parent's first line is the load spec; the worker answers
``{"ready": …}`` or ``{"error": …, "fix": …}``. Then each request ``{"id", "seq", "op":
"gen"|"score", …}`` is answered by lines carrying the same ``id`` (``t`` text pieces, ``usage``,
``finish``, ``scores``) and one line with ``"end": true``; ``{"op": "cancel", "id"}`` stops a
request. While requests are served, a heartbeat line ``{"id", "hb": n}`` goes out for each of
them at most once a second when a decode step finished since the last one (prompt evaluation
sends nothing else for a long time), so the parent can tell slow from hung.
The protocol uses a private copy of stdout; fd 1 itself is pointed at stderr, so nothing a native
library prints can corrupt it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bastion._proc import die_with_parent
from bastion.errors import BastionError

if TYPE_CHECKING:
    from bastion.llm.kernels import Choice

HEARTBEAT_S = 1.0
STOP_GRACE_S = 5.0  # after the parent closes the pipe, the requests in hand get this long
# Text pieces after a request's first go out together at most this long after the oldest was
# sampled (a screen shows them at ~30 updates a second); first pieces, ends and errors at once.
PIECE_FLUSH_S = 0.03


def _load(spec: dict[str, Any]) -> Any:
    """Load the GGUF file as the spec says (repacked buffer types only when ``repack``)."""
    from bastion.llm.embedded import _Engine, load_llama

    slots = max(1, int(spec.get("slots", 1)))
    llama = load_llama(
        Path(spec["path"]),
        n_ctx=int(spec["n_ctx"]) * slots,
        n_threads=spec.get("n_threads"),
        n_threads_batch=spec.get("n_threads_batch"),
        n_gpu_layers=int(spec.get("n_gpu_layers", 0)),
        repack=bool(spec.get("repack", True)),
        n_seq=slots,
    )
    return _Engine(llama, spec.get("chat_template"), spec.get("end_of_turn"))


def _batch_kernels(eng: Any, spec: dict[str, Any]) -> Choice:
    """Choose, for this CPU and model, which kernel multiplies small batches (measured once)."""
    from bastion.llm.kernels import choose, default
    from bastion.llm.repack import amx_kernels

    most = max(int(spec.get("cores") or 0), int(eng.llm.n_threads), int(eng.llm.n_threads_batch))
    amx = amx_kernels(bool(spec.get("repack", True)))
    try:
        return choose(eng.llm, Path(spec["path"]), threads=most, amx_kernels=amx,
                      n_gpu_layers=int(spec.get("n_gpu_layers", 0)))
    except (RuntimeError, OSError, ValueError) as exc:  # not measured: llama.cpp's default
        return default(f"llama.cpp's default batch kernels (not measured: {exc})",
                       "amx" if amx else "sgemm")


def _thread_plan(
    spec: dict[str, Any],
) -> tuple[Callable[[bool], int] | None, Callable[[bool], None] | None,
           Callable[[], None] | None]:
    """Each step's threads follow the pool's busy workers when the spec gives ``cores``.

    Returns ``threads(prompt)`` (called before each step: takes the step's cores), ``busy``
    and ``done`` (called after each step: gives the cores back). Without ``cores`` (threads
    set by the user, safe mode) the context's own fixed counts hold; a safe-mode worker of a
    pool (one thread) still holds a core for each step and marks the board.
    """
    from bastion.llm._threads import BusyBoard, CoreLeases, physical_cores, threads_for

    cores = int(spec.get("cores") or 0)
    spot = spec.get("board")
    if not spot:
        if cores <= 0:
            return None, None, None
        physical = physical_cores()  # a lone worker: nobody to share the cores with
        return (lambda prompt: threads_for(cores, 1, prompt=prompt, physical=physical)), None, \
            None
    board = BusyBoard(int(spot["fd"]), int(spot["size"]), owner=False)
    index = int(spot["index"])
    board.set(index, False)

    def busy(flag: bool) -> None:
        board.set(index, flag)

    if cores <= 0:  # safe mode in a pool: its one thread still holds a core and marks the
        # board, so the other workers do not count on that core
        fixed = CoreLeases(board.fd, os.cpu_count() or 1, home=index)
        return (lambda prompt: fixed.take(1)), busy, fixed.give_back
    physical = physical_cores()
    leases = CoreLeases(board.fd, cores, home=index)

    def threads(prompt: bool) -> int:
        return leases.take(threads_for(cores, board.count(), prompt=prompt, physical=physical))

    return threads, busy, leases.give_back


class _Out:
    """The protocol stream: one JSON object per line, written whole under a lock.

    :meth:`send` writes at once (after anything held). :meth:`later` holds a message (a
    piece of text that is not a request's first) until :meth:`flush` finds it
    :data:`PIECE_FLUSH_S` old, or the next :meth:`send`. Every write wakes the parent, and on
    a CPU whose cores all decode, that wake-up takes a core from a step in flight: one write
    per token cost 2-4% of the tokens/s on 2 cores (the same model decoded 0.955-0.991x as
    fast through a worker as in-process; with the pieces held, 0.98-1.01x).
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._held: list[bytes] = []
        self._since = 0.0  # when the oldest held message was held

    @staticmethod
    def _line(obj: dict[str, Any]) -> bytes:
        return (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")

    def _write(self, data: bytes = b"") -> None:  # under the lock
        if self._held:
            data = b"".join([*self._held, data])
            self._held.clear()
        self._stream.write(data)
        self._stream.flush()

    def send(self, obj: dict[str, Any]) -> None:
        """Write ``obj`` now, after every message held."""
        data = self._line(obj)
        with self._lock:
            self._write(data)

    def later(self, obj: dict[str, Any]) -> None:
        """Hold ``obj`` for the next write (at most about :data:`PIECE_FLUSH_S`)."""
        data = self._line(obj)
        with self._lock:
            if not self._held:
                self._since = time.monotonic()
            self._held.append(data)

    def flush(self, *, all_held: bool = False) -> None:
        """Write the held messages if the oldest is :data:`PIECE_FLUSH_S` old (or ``all_held``)."""
        with self._lock:
            if not self._held or (not all_held
                                  and time.monotonic() - self._since < PIECE_FLUSH_S):
                return
            self._write()


def main() -> None:
    """Serve requests on stdin until it closes."""
    die_with_parent()  # (a parent gone before this closed our stdin: we exit on EOF)
    out = _Out(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)  # anything printed by native code goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    spec = json.loads(inp.readline() or b"{}")
    try:
        eng = _load(spec)
    except BastionError as exc:
        out.send({"error": exc.message, "fix": exc.fix})
        return
    failpoint = os.environ.get("BASTION_TEST_WORKER_FAULT", "")
    fault = {"after-load": signal.SIGSEGV, "after-load-sigill": signal.SIGILL}.get(failpoint)
    if fault is not None:  # failpoints for tests
        os.kill(os.getpid(), fault)
    if failpoint == "after-load-memory":  # grow until a memory limit kills it (at most 8 GiB)
        hog = [b"\x01" * (64 << 20) for _ in range(128)]  # written, so resident
        os._exit(70 + len(hog) % 2)
    kernels = _batch_kernels(eng, spec)
    from bastion.llm._batch import BatchEngine
    from bastion.llm.kernels import dot_rows

    slots = max(1, int(spec.get("slots", 1)))
    threads, busy, done = _thread_plan(spec)
    batch = BatchEngine(eng, slots, out.send, threads, busy, done,
                        later=out.later, flush=out.flush, on_threads=kernels.apply)
    out.send({"ready": True, "pid": os.getpid(), "n_ctx": batch.n_ctx_seq, "slots": slots,
              "repack": bool(eng.llm.model_params.use_extra_bufts),
              "n_threads": int(eng.llm.n_threads),
              "n_threads_batch": int(eng.llm.n_threads_batch),
              "cores": int(spec.get("cores") or 0),
              "batch_min_n": kernels.summary, "batch_kernel": kernels.path,
              "dot_rows": dot_rows(), "kernels": kernels.why})
    def heartbeat() -> None:
        last = -1
        while True:
            time.sleep(HEARTBEAT_S)
            n = batch.decodes
            if n != last:
                for rid in list(batch.serving):
                    out.send({"id": rid, "hb": n})
            last = n

    def requests() -> None:
        code = 0
        try:
            for line in inp:
                req = json.loads(line)
                if req.get("op") == "cancel":
                    batch.cancel(int(req["id"]))
                else:
                    batch.submit(req)
        except Exception as exc:  # a line that is not the protocol: say so, end like EOF
            print(f"bastion model worker: bad request line ({exc})", file=sys.stderr)
            code = 1
        batch.stop()  # the parent closed the pipe: finish the requests in hand, then exit
        time.sleep(STOP_GRACE_S)
        os._exit(code)  # (not finished by then: the parent is gone or shutting down)

    threading.Thread(target=heartbeat, name="bastion-model-heartbeat", daemon=True).start()
    threading.Thread(target=requests, name="bastion-model-requests", daemon=True).start()
    # Decode on the thread that loaded the model: llama.cpp runs each step on an OpenMP team
    # owned by the calling thread, and one team per process keeps OpenMP's threads within the
    # cores (see bastion.llm.embedded.release_openmp_threads for what two teams cost).
    batch.run()


if __name__ == "__main__":
    main()

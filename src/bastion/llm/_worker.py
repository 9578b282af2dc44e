"""The model worker: one llama.cpp context in a child process, driven over a pipe.

``python -m bastion.llm._worker`` is started by :mod:`bastion.llm.worker`. Native code (the
GGUF loader, llama.cpp's kernels, the grammar engine) runs only here, so a segfault, an abort or an
out-of-memory kill costs the request in flight, never the agent, the API server, pending
approvals or the audit writer (the way Ollama runs its runner).

Protocol: JSON lines. The parent's first line is the load spec; the worker answers
``{"ready": …}`` or ``{"error": …, "fix": …}``. Then each request ``{"id", "op": "gen"|"score",
…}`` is answered by lines carrying the same ``id`` (``t`` text pieces, ``usage``, ``finish``,
``scores``) and one line with ``"end": true``; ``{"op": "cancel", "id"}`` stops a generation.
While a request is served, a heartbeat line ``{"id", "hb": n_tokens}`` goes out at most once a
second when the context's token count moved (prompt evaluation sends nothing else for a long
time), so the parent can tell slow from hung.
A request may carry ``"threads": [n, n_batch]``: the worker's share of the CPUs right now.
The protocol uses a private copy of stdout; fd 1 itself is pointed at stderr, so nothing a native
library prints can corrupt it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from bastion._proc import die_with_parent
from bastion.errors import BastionError

HEARTBEAT_S = 1.0


def _load(spec: dict[str, Any]) -> Any:
    """Load the GGUF file as the spec says (repacked buffer types only when ``repack``)."""
    from bastion.llm.embedded import _Engine, load_llama

    llama = load_llama(
        Path(spec["path"]),
        n_ctx=int(spec["n_ctx"]),
        n_threads=spec.get("n_threads"),
        n_gpu_layers=int(spec.get("n_gpu_layers", 0)),
        repack=bool(spec.get("repack", True)),
    )
    return _Engine(llama, spec.get("chat_template"), spec.get("end_of_turn"))


class _Out:
    """The protocol stream: one JSON object per line, written whole under a lock."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


def _set_threads(eng: Any, threads: list[int] | None) -> None:
    """Use ``[n_threads, n_threads_batch]`` from now on (the parent's share for this worker)."""
    if not threads:
        return
    n, nb = int(threads[0]), int(threads[1])
    llm = eng.llm
    if (n, nb) != (llm.n_threads, llm.n_threads_batch):
        from llama_cpp import llama_cpp as C

        C.llama_set_n_threads(llm._ctx.ctx, n, nb)
        llm.n_threads, llm.n_threads_batch = n, nb


def _run(eng: Any, req: dict[str, Any], out: _Out, cancel: threading.Event) -> None:
    rid = req["id"]
    try:
        _set_threads(eng, req.get("threads"))
        if req["op"] == "score":
            scores = eng.score(req["messages"], req.get("prefix", ""), req["options"])
            out.send({"id": rid, "scores": scores, "end": True})
            return
        toks = eng.tokens(eng.render(req["messages"], req.get("prefix", "")))
        schema = req.get("schema")
        grammar = eng.grammar(schema) if schema is not None else None
        for item in eng.generate(
            toks,
            max_tokens=int(req["max_tokens"]),
            temperature=float(req["temperature"]),
            grammar=grammar,
            stop=req.get("stop") or (),
            seed=req.get("seed"),
            cancelled=cancel.is_set,
        ):
            if isinstance(item, str):
                out.send({"id": rid, "t": item})
            elif hasattr(item, "prompt_tokens"):
                out.send({"id": rid, "usage": [item.prompt_tokens, item.completion_tokens]})
            else:
                out.send({"id": rid, "finish": item.reason})
        out.send({"id": rid, "end": True})
    except BastionError as exc:
        out.send({"id": rid, "error": exc.message, "fix": exc.fix, "end": True})
    except Exception as exc:  # noqa: BLE001 - any Python-level failure is this request's error
        out.send({"id": rid, "error": f"{type(exc).__name__}: {exc}", "fix": None, "end": True})


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
    if os.environ.get("BASTION_TEST_WORKER_FAULT") == "after-load":  # failpoint for tests
        os.kill(os.getpid(), signal.SIGSEGV)
    out.send({"ready": True, "pid": os.getpid(), "n_ctx": int(eng.llm.n_ctx()),
              "repack": bool(eng.llm.model_params.use_extra_bufts),
              "n_threads": int(eng.llm.n_threads)})

    jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
    cancels: dict[int, threading.Event] = {}
    serving: list[int | None] = [None]

    def worker() -> None:
        while (req := jobs.get()) is not None:
            serving[0] = req["id"]
            try:
                _run(eng, req, out, cancels[req["id"]])
            finally:
                serving[0] = None
                cancels.pop(req["id"], None)

    def heartbeat() -> None:
        last = -1
        while True:
            time.sleep(HEARTBEAT_S)
            rid, n = serving[0], int(eng.llm.n_tokens)
            if rid is not None and n != last:
                out.send({"id": rid, "hb": n})
            last = n

    threading.Thread(target=heartbeat, name="bastion-model-heartbeat", daemon=True).start()

    thread = threading.Thread(target=worker, name="bastion-model-worker", daemon=True)
    thread.start()
    for line in inp:
        req = json.loads(line)
        if req.get("op") == "cancel":
            ev = cancels.get(int(req["id"]))
            if ev is not None:
                ev.set()
            continue
        cancels[int(req["id"])] = threading.Event()
        jobs.put(req)
    jobs.put(None)  # the parent closed the pipe: finish the request in hand, then exit
    thread.join(timeout=5)


if __name__ == "__main__":
    main()

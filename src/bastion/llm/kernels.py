"""Which kernel multiplies a small batch here: measured once per CPU, llama.cpp build and model.

llama.cpp's CPU backend multiplies a batch of two or more rows (a prompt chunk, or one token of
each of several conversations) with llamafile's tinyBLAS kernels (``llamafile_sgemm``) and a
single row with ggml's own dot products. On some CPUs tinyBLAS is slower than the dot products
for small batches. On an AMD EPYC (Zen 5, 2 cores, 1 thread, the shipped model's Q8_0 copy) one
decode step of 2 sequences took 24.6 ms through tinyBLAS and 13.6 ms through the dot products,
4 sequences 38.2 against 24.2 ms, while a 32-token prompt chunk took 118 against 245 ms. With
four conversations on two workers, that made 4 streams no faster in total than one (1.02x).

bastion's build (``scripts/llama-cpp/wheel.sh``) force-includes ``sgemm_gate.h`` into
llama.cpp's C files: below a minimum batch size (llama.cpp's own is 2), ``llamafile_sgemm``
declines and llama.cpp's fallback (the dot products) runs. :func:`choose` measures both paths
on the loaded model, in the model worker (a crash there costs a worker, never bastion), for
batches of 2 to 32 rows, and sets the minimum above every size where the dot products were
clearly faster. The verdict is kept in the private model cache, keyed by the llama.cpp CPU
library and CPU (:func:`bastion.llm.repack._installed_key`) and the model file, so each is
measured once. ``BASTION_SGEMM_MIN_N`` (a number) sets the minimum without measuring.

Not measured, llama.cpp's default kept: weights on llama.cpp's AMX kernels (they multiply
batches themselves), GPU offload, models over :data:`MAX_MODEL_BYTES` (decoding them is bound
by memory bandwidth, where a batched kernel's one pass over the weights wins), and a
llama-cpp-python built without the gate.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIZES = (2, 4, 8, 16, 32)  # batch sizes measured: decode steps of 2-4 sequences, prompt chunks
REPS = 3  # each size, each path; the fastest run counts
DEFAULT_MIN_N = 2  # llama.cpp's own: a single row never goes to sgemm
#: the dot products must take at most this share of sgemm's time for a size to leave sgemm
#: (their real wins at 2-4 rows are 0.5-0.6; at 8 rows a noisy 0.85-0.95 either way)
CLEAR_WIN = 0.8
MAX_MODEL_BYTES = 1 << 30
VERDICTS = "sgemm-probe.json"
ENV = "BASTION_SGEMM_MIN_N"
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Choice:
    """The smallest batch that goes to llamafile's sgemm here, and why (one line)."""

    min_n: int
    why: str
    timings: Mapping[int, tuple[float, float]] = field(default_factory=dict)  # ms: sgemm, dots


def decide(timings: Mapping[int, tuple[float, float]]) -> int:
    """Return the smallest batch for sgemm: above every size where the dot products clearly won.

    ``timings`` maps a batch size to (sgemm ms, dot-product ms) for one decode of that many
    rows. Sizes between those measured follow the next larger one measured; past the largest,
    sgemm is assumed to win again (a batched kernel's advantage grows with the batch).
    """
    lost = [n for n, (sgemm, dots) in timings.items() if dots <= CLEAR_WIN * sgemm]
    if not lost:
        return DEFAULT_MIN_N
    worst = max(lost)
    larger = sorted(n for n in timings if n > worst)
    return larger[0] if larger else worst * 2


def _library() -> Any | None:
    """Return llama.cpp's CPU library when it has bastion's sgemm gate, else None."""
    try:
        import llama_cpp  # noqa: F401 - loads llama.cpp's libraries
    except ImportError:
        return None
    # A wheel holds no symbolic links: libggml-cpu.so, .so.0 and .so.0.x are separate copies,
    # and opening another one than llama.cpp loaded would set a variable nobody reads.
    loaded = _loaded("libggml-cpu.so")
    if loaded is None:
        return None
    try:
        lib = ctypes.CDLL(loaded)  # (already loaded: the same handle)
        setter, getter = lib.bastion_set_sgemm_min_n, lib.bastion_get_sgemm_min_n
        declined = lib.bastion_get_sgemm_declined
    except (OSError, AttributeError):
        return None
    setter.argtypes, setter.restype = [ctypes.c_int], None
    getter.argtypes, getter.restype = [], ctypes.c_int
    declined.argtypes, declined.restype = [], ctypes.c_long
    return lib


def _loaded(prefix: str) -> str | None:
    """Return the path of the library named ``prefix``* this process has mapped, if any."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if Path(path).name.startswith(prefix):
            return path
    return None


def current() -> int | None:
    """Return the minimum batch for sgemm in this process (None: no gate in this build)."""
    lib = _library()
    return None if lib is None else int(lib.bastion_get_sgemm_min_n())


def declined() -> int | None:
    """Return how many multiplies of 2+ rows the gate sent to the dot products in this process."""
    lib = _library()
    return None if lib is None else int(lib.bastion_get_sgemm_declined())


def set_min_n(n: int) -> bool:
    """Send batches of ``n`` rows or more to sgemm (smaller: the dot products); False: no gate."""
    lib = _library()
    if lib is None:
        return False
    lib.bastion_set_sgemm_min_n(int(n))
    return True


def measure(llama: Any, sizes: tuple[int, ...] = SIZES, reps: int = REPS,
            clock: Callable[[], float] = time.perf_counter) -> dict[int, tuple[float, float]]:
    """Time one decode of each size through sgemm and through the dot products, on 1 thread.

    Uses sequence 0 of ``llama``'s context (cleared before and after), logits for every row
    (as a decode step of several sequences needs). Restores the context's thread counts and
    llama.cpp's default minimum.
    """
    from llama_cpp import llama_cpp as C

    ctx = llama._ctx.ctx
    mem = C.llama_get_memory(ctx)
    threads = (int(llama.n_threads), int(llama.n_threads_batch))
    batch = C.llama_batch_init(max(sizes), 0, 1)
    best: dict[tuple[int, int], float] = {}

    def decode(n: int) -> None:
        batch.n_tokens = n
        for i in range(n):
            batch.token[i] = 1000 + i
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = True
        rc = int(C.llama_decode(ctx, batch))
        C.llama_memory_seq_rm(mem, 0, 0, -1)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    try:
        C.llama_memory_seq_rm(mem, 0, 0, -1)
        C.llama_set_n_threads(ctx, 1, 1)
        set_min_n(DEFAULT_MIN_N)
        decode(max(sizes))  # compute buffers are sized and allocated on the first decode
        for rep in range(reps):
            for n in sizes:
                paths = (DEFAULT_MIN_N, n + 1) if rep % 2 == 0 else (n + 1, DEFAULT_MIN_N)
                for min_n in paths:
                    set_min_n(min_n)
                    t0 = clock()
                    decode(n)
                    took = (clock() - t0) * 1000.0
                    key = (n, 0 if min_n == DEFAULT_MIN_N else 1)
                    best[key] = min(best.get(key, took), took)
    finally:
        set_min_n(DEFAULT_MIN_N)
        C.llama_set_n_threads(ctx, *threads)
        C.llama_batch_free(batch)
    return {n: (best[(n, 0)], best[(n, 1)]) for n in sizes}


def _describe(min_n: int, timings: Mapping[int, tuple[float, float]]) -> str:
    shown = ", ".join(f"{n}: {s:.1f}/{d:.1f} ms" for n, (s, d) in sorted(timings.items()))
    if min_n == DEFAULT_MIN_N:
        return f"batches on llamafile's sgemm from 2 rows, llama.cpp's default (sgemm/dots {shown})"
    return (f"batches below {min_n} rows on ggml's dot products, faster than llamafile's sgemm "
            f"on this CPU (sgemm/dots {shown})")


def _key(path: Path) -> str | None:
    from bastion.llm.repack import _installed_key

    lib = _installed_key()
    if lib is None:
        return None
    st = path.stat()
    return f"{lib}:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _verdicts_path() -> Path | None:
    from bastion.errors import ModelError
    from bastion.llm._cache import private_cache_dir

    try:
        return private_cache_dir() / VERDICTS
    except (ModelError, OSError):
        return None  # no private folder: measure in each worker


def _load(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def choose(llama: Any, path: Path, *, amx_kernels: bool, n_gpu_layers: int = 0) -> Choice:
    """Set (and return) the minimum batch for sgemm for ``llama``, loaded from ``path``."""
    from bastion.config.paths import write_private

    fixed = os.environ.get(ENV, "").strip()
    if _library() is None:
        return Choice(DEFAULT_MIN_N, "llama.cpp's default batch kernels (this llama-cpp-python "
                      "has no sgemm gate; `make install` builds bastion's)")
    if fixed:
        n = max(DEFAULT_MIN_N, int(fixed)) if fixed.isdigit() else DEFAULT_MIN_N
        set_min_n(n)
        if n == DEFAULT_MIN_N:
            return Choice(n, f"llama.cpp's default batch kernels ({ENV}={fixed})")
        return Choice(n, f"batches below {n} rows on ggml's dot products ({ENV}={fixed})")
    if amx_kernels:
        return Choice(DEFAULT_MIN_N, "batches on llama.cpp's AMX kernels (weights repacked)")
    if n_gpu_layers:
        return Choice(DEFAULT_MIN_N, "llama.cpp's default batch kernels (GPU offload)")
    if path.stat().st_size > MAX_MODEL_BYTES:
        return Choice(DEFAULT_MIN_N, "llama.cpp's default batch kernels (a large model: "
                      "decoding is bound by memory, a batched kernel wins)")
    key, store = _key(path), _verdicts_path()
    with _LOCK:
        known = _load(store).get(key or "")
        if isinstance(known, dict) and isinstance(known.get("min_n"), int):
            timings = {int(n): (float(s), float(d))
                       for n, (s, d) in dict(known.get("timings") or {}).items()}
            got = Choice(int(known["min_n"]), _describe(int(known["min_n"]), timings), timings)
        else:
            timings = measure(llama)
            min_n = decide(timings)
            got = Choice(min_n, _describe(min_n, timings), timings)
            if key is not None and store is not None:
                data = _load(store)
                data[key] = {"min_n": min_n, "timings": {str(n): list(t)
                                                         for n, t in timings.items()}}
                with contextlib.suppress(OSError):  # not kept: the next worker measures again
                    write_private(store, json.dumps(data, indent=1))
    set_min_n(got.min_n)
    return got

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
batches of 2 to 16 rows, on one thread and on the most threads a step of that worker gets: on
the EPYC the dot products won clearly on one thread (2 rows 11.5 against 23.6 ms) and not on
two (14.0 against 13.9 ms; they scale worse with threads). For each thread count the minimum
goes above every size where the dot products took at most :data:`CLEAR_WIN` of sgemm's time,
and :meth:`Choice.apply` sets the one for each step's thread count. The verdict is kept in the
private model cache, keyed by the llama.cpp CPU library and CPU
(:func:`bastion.llm.repack._installed_key`), the model file and the thread counts, so each is
measured once (~1.5 s). ``BASTION_SGEMM_MIN_N`` (a number) fixes the minimum without
measuring (for either path).

Weights repacked for llama.cpp's AMX kernels have the same choice in another place: llama.cpp
multiplies one row on AVX-512 VNNI and two or more on 32-row AMX tiles, so on the AMX Xeon a
step of 2 sequences cost as much as two steps of one (16.4 against 8.1 ms, one thread). bastion's
build adds multi-row VNNI kernels (``scripts/llama-cpp/amx_small_batch.patch``: each row
bit-identical to a one-row step, the weights loaded and unpacked once for all rows) and a knob
for how many rows take them; :func:`choose` measures it the same way (``path="amx"``).

The dot products themselves take two batch rows per call in bastion's build on x86 with AVX2
(``scripts/llama-cpp/two_row_dots.patch``): for Q4_0, Q4_1 and Q8_0 weights, two weight rows
times two batch rows, as llama.cpp's ARM i8mm kernels do, each weight row read once for both
batch rows and each result bit-identical to a one-row call. On one thread of an AMD EPYC Zen 4
a decode step of 2 sequences (the Q8_0 copy) took 13.1 ms that way against 19.2 ms one row per
call (1 sequence: 10.2 ms), so the measured choice sends more batches to them.
``BASTION_DOT_ROWS=1`` (:data:`DOT_ENV`) restores llama.cpp's one row per call (an A/B switch).

Before a measured choice is used, both paths' logits for the largest batch are compared
(:data:`AGREE`); where they disagree, llama.cpp's default is kept. Not measured, llama.cpp's
default kept: GPU offload, models over :data:`MAX_MODEL_BYTES` (decoding them is bound by memory
bandwidth, where a batched kernel's one pass over the weights wins), and a llama-cpp-python
built without the gate (or, for AMX, without the VNNI rows).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.llm._cache import read_verdicts

SIZES = (2, 4, 8, 16)  # batch sizes measured: decode steps of 2-4 sequences, short prompts
REPS = 3  # each size, each path; the fastest run counts
DEFAULT_MIN_N = 2  # llama.cpp's own: a single row never goes to sgemm
#: the dot products must take at most this share of sgemm's time for a size to leave sgemm
#: (their real wins at 2-4 rows on one thread are 0.5-0.6; at 8 rows a noisy 0.85-0.95)
CLEAR_WIN = 0.8
#: a path's time from one size measured to the next (twice the rows) must stay within these
#: shares, else another process took the cores while it was measured: more rows never take much
#: less time, nor more than proportionally more (quiet runs: 1.15-1.91x per doubling; the AMX
#: tiles, which pad to 32 rows, 1.29x from 2 to 4). Measured under a test run, one 2-thread set
#: went 33.9, 23.1, 37.8, 191.3 ms and would have sent every batch below 32 rows to the dot
#: products.
PLAUSIBLE = (0.85, 2.5)
MAX_MODEL_BYTES = 1 << 30
#: both paths' logits (16 rows) must agree to this share of the largest logit, else the default
#: stays. Two right kernels differ by rounding, grown through the layers: sgemm and the dot
#: products up to 3% on the AMD EPYC; a multi-row kernel that dropped one row's term 130%.
AGREE = 0.1
VERDICTS = "sgemm-probe.json"
ENV = "BASTION_SGEMM_MIN_N"
DOT_ENV = "BASTION_DOT_ROWS"  # "1": the dot products take one batch row per call (llama.cpp's)
_LOCK = threading.Lock()

Timings = Mapping[int, tuple[float, float]]  # batch size -> (batched ms, small-batch path ms)
#: the batched kernel each path names, and the small-batch kernel the gate sends batches to
PATHS = {"sgemm": ("sgemm", "ggml's dot products"), "amx": ("AMX tiles", "the VNNI kernels")}


@dataclass(frozen=True)
class Choice:
    """The smallest batch for the batched kernel, per step thread count, and why.

    ``path`` names the batched kernel: ``"sgemm"`` (llamafile's, for weights in llama.cpp's own
    layout) or ``"amx"`` (AMX tiles, for weights repacked for them). ``min_n`` maps a thread
    count measured to its minimum; a step on more threads takes the largest count measured at or
    below its own (on fewer than any: llama.cpp's default).
    """

    min_n: Mapping[int, int]
    why: str
    timings: Mapping[int, Timings] = field(default_factory=dict)  # threads -> sizes' timings
    path: str = "sgemm"

    def for_threads(self, threads: int) -> int:
        """Return the minimum for a step on ``threads`` threads."""
        below = [t for t in self.min_n if t <= threads]
        return self.min_n[max(below)] if below else DEFAULT_MIN_N

    def apply(self, threads: int) -> None:
        """Set the library's minimum for a step on ``threads`` threads.

        The batch engine calls this whenever a step's thread count changes.
        """
        set_min_n(self.for_threads(threads), self.path)

    @property
    def summary(self) -> dict[str, int]:
        """``{"1": 8, "2": 2}``: the minimum per thread count (for the worker's ready line)."""
        return {str(t): n for t, n in sorted(self.min_n.items())}


def decide(timings: Mapping[int, tuple[float, float]]) -> int:
    """Return the smallest batch for the batched kernel: above every size the other clearly won.

    ``timings`` maps a batch size to (batched ms, small-batch path ms) for one decode of that
    many rows. Sizes between those measured follow the next larger one measured; past the
    largest, the batched kernel is assumed to win again (its advantage grows with the batch).
    """
    lost = [n for n, (batched, small) in timings.items() if small <= CLEAR_WIN * batched]
    if not lost:
        return DEFAULT_MIN_N
    worst = max(lost)
    larger = sorted(n for n in timings if n > worst)
    return larger[0] if larger else worst * 2


@functools.cache
def _library() -> Any | None:
    """Return llama.cpp's CPU library when it has bastion's sgemm gate, else None (found once)."""
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
    with contextlib.suppress(AttributeError):  # (a build before the AMX rows: without them)
        built = lib.bastion_amx_rows_built
        built.argtypes, built.restype = [], ctypes.c_int
        lib.bastion_set_amx_rows_max.argtypes = [ctypes.c_int]
        lib.bastion_set_amx_rows_max.restype = None
        lib.bastion_get_amx_rows_max.argtypes = []
        lib.bastion_get_amx_rows_max.restype = ctypes.c_int
        lib.bastion_get_amx_rows_steps.argtypes = []
        lib.bastion_get_amx_rows_steps.restype = ctypes.c_long
    with contextlib.suppress(AttributeError):  # (a build before the two-row dot products)
        lib.bastion_dot2_built.argtypes, lib.bastion_dot2_built.restype = [], ctypes.c_int
        lib.bastion_set_dot_rows.argtypes, lib.bastion_set_dot_rows.restype = [ctypes.c_int], None
        lib.bastion_get_dot_rows.argtypes, lib.bastion_get_dot_rows.restype = [], ctypes.c_int
        lib.bastion_get_dot2_steps.argtypes = []
        lib.bastion_get_dot2_steps.restype = ctypes.c_long
    return lib


def _built(flag: str) -> Any | None:
    """Return the library when it exports ``flag`` and that says the feature is built."""
    lib = _library()
    return lib if lib is not None and hasattr(lib, flag) and bool(getattr(lib, flag)()) else None


def _dots() -> Any | None:
    """Return the library when its dot products take two batch rows per call (x86, AVX2)."""
    return _built("bastion_dot2_built")


def dot2_built() -> bool:
    """Whether this llama.cpp's dot products can take two batch rows per call (x86, AVX2)."""
    return _dots() is not None


def dot_rows() -> int:
    """How many batch rows one call of the dot products takes now (llama.cpp's own: 1)."""
    lib = _dots()
    return 1 if lib is None else int(lib.bastion_get_dot_rows())


def set_dot_rows(n: int) -> bool:
    """Let the dot products take ``n`` (1 or 2) batch rows per call. False: not in this build."""
    lib = _dots()
    if lib is not None:
        lib.bastion_set_dot_rows(int(n))
    return lib is not None


def dot2_steps() -> int:
    """How many multiplies in this process ran the two-row dot products (0: none, or no build)."""
    lib = _dots()
    return 0 if lib is None else int(lib.bastion_get_dot2_steps())


def _dot_rows_from_env() -> None:
    """Apply :data:`DOT_ENV` (``1`` or ``2``; anything else leaves the build's default, 2)."""
    wanted = os.environ.get(DOT_ENV, "").strip()
    if wanted in ("1", "2"):
        set_dot_rows(int(wanted))


def amx_rows_built() -> bool:
    """Whether this llama.cpp has the AMX backend with bastion's multi-row VNNI kernels."""
    return _built("bastion_amx_rows_built") is not None


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


@dataclass(frozen=True)
class _Knob:
    """One path's gate in the library, in minimum-batch terms.

    (The AMX knob counts the rows that stay on VNNI: a minimum of n is n - 1 of them.)
    """

    set: Callable[[int], None]
    get: Callable[[], int]
    moved: Callable[[], int]  # multiplies of 2+ rows sent off the batched kernel so far


def _knob(path: str) -> _Knob | None:
    lib = _library()
    if lib is None or (path == "amx" and not amx_rows_built()):
        return None
    if path == "amx":
        return _Knob(lambda n: lib.bastion_set_amx_rows_max(n - 1),
                     lambda: int(lib.bastion_get_amx_rows_max()) + 1,
                     lambda: int(lib.bastion_get_amx_rows_steps()))
    return _Knob(lib.bastion_set_sgemm_min_n, lambda: int(lib.bastion_get_sgemm_min_n()),
                 lambda: int(lib.bastion_get_sgemm_declined()))


def current(path: str = "sgemm") -> int | None:
    """Return the minimum batch for ``path``'s batched kernel here (None: no gate for it)."""
    knob = _knob(path)
    return None if knob is None else knob.get()


def declined(path: str = "sgemm") -> int | None:
    """Return how many multiplies of 2+ rows left ``path``'s batched kernel in this process."""
    knob = _knob(path)
    return None if knob is None else knob.moved()


def set_min_n(n: int, path: str = "sgemm") -> bool:
    """Send batches of ``n`` rows or more to ``path``'s batched kernel, smaller to the other.

    False: this build has no gate for that path.
    """
    knob = _knob(path)
    if knob is None:
        return False
    knob.set(int(n))
    return True


def measure(llama: Any, threads: int = 1, sizes: tuple[int, ...] = SIZES, reps: int = REPS,
            clock: Callable[[], float] = time.perf_counter,
            path: str = "sgemm") -> dict[int, tuple[float, float]]:
    """Time one decode of each size through ``path``'s batched kernel and its small-batch one.

    Uses sequence 0 of ``llama``'s context (cleared before and after), logits for every row
    (as a decode step of several sequences needs). Restores the context's thread counts and
    llama.cpp's default minimum.
    """
    from llama_cpp import llama_cpp as C

    before = (int(llama.n_threads), int(llama.n_threads_batch))
    best: dict[tuple[int, int], float] = {}
    with _decoder(llama, max(sizes), path) as decode:
        try:
            C.llama_set_n_threads(llama._ctx.ctx, threads, threads)
            decode(max(sizes))  # compute buffers are sized and allocated on the first decode
            for rep in range(reps):
                for n in sizes:
                    paths = (DEFAULT_MIN_N, n + 1) if rep % 2 == 0 else (n + 1, DEFAULT_MIN_N)
                    for min_n in paths:
                        set_min_n(min_n, path)
                        t0 = clock()
                        decode(n)
                        took = (clock() - t0) * 1000.0
                        key = (n, 0 if min_n == DEFAULT_MIN_N else 1)
                        best[key] = min(best.get(key, took), took)
        finally:
            C.llama_set_n_threads(llama._ctx.ctx, *before)
    return {n: (best[(n, 0)], best[(n, 1)]) for n in sizes}


def check_agree(llama: Any, path: str, rows: int = max(SIZES)) -> None:
    """Decode ``rows`` rows through both of ``path``'s kernels and compare all their logits.

    :class:`KernelsDisagree` where they differ by more than :data:`AGREE` of the largest.
    """
    with _decoder(llama, rows, path) as decode:
        batched = decode(rows, keep=True)
        set_min_n(rows + 1, path)
        _compare(batched, decode(rows, keep=True), path)


@contextlib.contextmanager
def _decoder(llama: Any, most: int, path: str) -> Iterator[Callable[..., Any]]:
    """Yield ``decode(n, keep=False)``: one decode of ``n`` (at most ``most``) rows.

    In sequence 0 of ``llama``'s context (cleared before and after), logits for every row; with
    ``keep``, it returns those logits. ``path``'s minimum is llama.cpp's default before and after.
    """
    import numpy as np
    from llama_cpp import llama_cpp as C

    ctx = llama._ctx.ctx
    mem = C.llama_get_memory(ctx)
    batch = C.llama_batch_init(most, 0, 1)

    def decode(n: int, keep: bool = False) -> Any:
        batch.n_tokens = n
        for i in range(n):
            batch.token[i] = 1000 + i
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = True
        rc = int(C.llama_decode(ctx, batch))
        got = (np.ctypeslib.as_array(C.llama_get_logits(ctx), shape=(n * llama.n_vocab(),)).copy()
               if keep and rc == 0 else None)
        C.llama_memory_seq_rm(mem, 0, 0, -1)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        return got

    try:
        C.llama_memory_seq_rm(mem, 0, 0, -1)
        set_min_n(DEFAULT_MIN_N, path)
        yield decode
    finally:
        set_min_n(DEFAULT_MIN_N, path)
        C.llama_batch_free(batch)


def plausible(timings: Mapping[int, tuple[float, float]]) -> bool:
    """Whether one thread count's timings look undisturbed (:data:`PLAUSIBLE`, both paths)."""
    low, high = PLAUSIBLE
    sizes = sorted(timings)
    for a, b in zip(sizes, sizes[1:], strict=False):
        for path in (0, 1):
            before, after = timings[a][path], timings[b][path]
            if not low * before <= after <= high * (b / a) / 2 * before:
                return False
    return True


class KernelsDisagree(RuntimeError):
    """The two paths' logits differ: the small-batch kernel is not used."""


def _compare(batched: Any, small: Any, path: str) -> None:
    """Raise :class:`KernelsDisagree` unless two paths' logits (float arrays) are close."""
    import numpy as np

    a, b = np.asarray(batched, dtype=np.float64), np.asarray(small, dtype=np.float64)
    scale = float(np.abs(a).max()) if a.size else 0.0
    worst = float(np.abs(a - b).max()) if a.size and a.shape == b.shape else float("inf")
    if not a.size or not np.isfinite(worst) or worst > AGREE * max(scale, 1e-6):
        big, little = PATHS[path]
        raise KernelsDisagree(f"{little} and {big} disagree: logits differ by up to {worst:.4g} "
                              f"(largest {scale:.4g})")


def _describe(min_n: Mapping[int, int], timings: Mapping[int, Timings],
              path: str = "sgemm") -> str:
    big, little = PATHS[path]
    if path == "sgemm" and dot_rows() == 2:
        little += " (two rows per call)"
    parts = []
    for t in sorted(min_n):
        shown = ", ".join(f"{n}: {s:.1f}/{d:.1f}" for n, (s, d) in sorted(timings[t].items()))
        what = (f"{big} from 2 rows (llama.cpp's default)" if min_n[t] == DEFAULT_MIN_N
                else f"below {min_n[t]} rows on {little}")
        short = "sgemm/dots" if path == "sgemm" else "tiles/vnni"
        parts.append(f"{t} thread{'s' if t > 1 else ''}: {what} ({short} ms {shown})")
    return "small batches measured: " + "; ".join(parts)


def _key(path: Path, threads: tuple[int, ...], kernel: str = "sgemm") -> str | None:
    from bastion.llm.repack import _installed_key

    lib = _installed_key()
    if lib is None:
        return None
    st = path.stat()
    counts = ",".join(str(t) for t in threads)
    return (f"{lib}:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:threads={counts}"
            + ("" if kernel == "sgemm" else f":{kernel}")
            + ("" if kernel != "sgemm" or dot_rows() == 2 else ":dots=1"))


def _verdicts_path() -> Path | None:
    from bastion.errors import ModelError
    from bastion.llm._cache import private_cache_dir

    try:
        return private_cache_dir() / VERDICTS
    except (ModelError, OSError):
        return None  # no private folder: measure in each worker


def default(why: str, path: str = "sgemm") -> Choice:
    """llama.cpp's own choice (a minimum of 2 on every thread count) for ``path``, and why."""
    return Choice({1: DEFAULT_MIN_N}, why, path=path)


def choose(llama: Any, path: Path, *, threads: int, amx_kernels: bool,
           n_gpu_layers: int = 0) -> Choice:
    """Return the minimum batch for the batched kernel per thread count for ``llama`` (``path``).

    ``amx_kernels``: its weights are repacked for llama.cpp's AMX kernels (then the AMX tiles'
    minimum is measured, else sgemm's).
    ``threads``: the most threads a step of this worker runs on; one thread and that many are
    measured (how many a step gets follows the busy workers). The batch engine applies it
    (:meth:`Choice.apply`) whenever a step's thread count changes. :data:`DOT_ENV` is applied
    first: the dot products' rows per call are part of what is measured (and of the key).
    """
    from bastion.config.paths import write_private

    fixed = os.environ.get(ENV, "").strip()
    _dot_rows_from_env()
    if _library() is None:
        return default("llama.cpp's default batch kernels (this llama-cpp-python has no sgemm "
                       "gate; `make install` builds bastion's)")
    kernel = "amx" if amx_kernels else "sgemm"
    little = PATHS[kernel][1]
    if amx_kernels and not amx_rows_built():
        return default("batches on llama.cpp's AMX kernels (weights repacked; this build has no "
                       "multi-row VNNI kernels: `make install` builds bastion's)", kernel)
    if fixed:
        n = max(DEFAULT_MIN_N, int(fixed)) if fixed.isdigit() else DEFAULT_MIN_N
        if n == DEFAULT_MIN_N:
            return default(f"llama.cpp's default batch kernels ({ENV}={fixed})", kernel)
        return Choice({1: n}, f"batches below {n} rows on {little} ({ENV}={fixed})", path=kernel)
    if n_gpu_layers:
        return default("llama.cpp's default batch kernels (GPU offload)", kernel)
    if path.stat().st_size > MAX_MODEL_BYTES:
        return default("llama.cpp's default batch kernels (a large model: decoding is bound "
                       "by memory, a batched kernel wins)", kernel)
    counts = tuple(sorted({1, max(1, threads)}))
    key, store = _key(path, counts, kernel), _verdicts_path()
    with _LOCK, _exclusive(store):  # one measurement at a time: a pool's workers share cores
        known = read_verdicts(store).get(key or "")
        got = _kept(known, kernel) if isinstance(known, dict) else None
        if got is None:
            try:
                check_agree(llama, kernel)
                timings = {t: measure(llama, t, path=kernel) for t in counts}
                if not all(plausible(tm) for tm in timings.values()):  # once more
                    timings = {t: measure(llama, t, path=kernel) for t in counts}
            except KernelsDisagree as exc:  # (not kept: a worker after an update measures)
                return default(f"llama.cpp's default batch kernels ({exc})", kernel)
            if not all(plausible(tm) for tm in timings.values()):  # (not kept either)
                return default("llama.cpp's default batch kernels (the CPU was busy while they "
                               "were timed, twice; they are timed again at the next start)",
                               kernel)
            min_n = {t: decide(timings[t]) for t in counts}
            got = Choice(min_n, _describe(min_n, timings, kernel), timings, kernel)
            if key is not None and store is not None:
                data = read_verdicts(store)
                data[key] = {"min_n": got.summary,
                             "timings": {str(t): {str(n): list(v) for n, v in tm.items()}
                                         for t, tm in timings.items()}}
                with contextlib.suppress(OSError):  # not kept: the next worker measures again
                    write_private(store, json.dumps(data, indent=1))
    return got


@contextlib.contextmanager
def _exclusive(store: Path | None) -> Iterator[None]:
    """Hold a lock beside ``store``: another worker measuring waits, then reads the verdict."""
    if store is None:
        yield
        return
    import fcntl

    try:
        fd = os.open(store.with_suffix(".lock"),
                     os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield  # no lock to take: measured side by side
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def _kept(known: dict[str, Any], kernel: str = "sgemm") -> Choice | None:
    """Return a kept verdict, or None when it is not one (measured again then)."""
    try:
        min_n = {int(t): int(n) for t, n in dict(known["min_n"]).items()}
        timings = {int(t): {int(n): (float(v[0]), float(v[1])) for n, v in dict(tm).items()}
                   for t, tm in dict(known["timings"]).items()}
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if not min_n or set(min_n) != set(timings) or not all(
            DEFAULT_MIN_N <= n <= 2 * max(SIZES) for n in min_n.values()):
        return None
    return Choice(min_n, _describe(min_n, timings, kernel), timings, kernel)

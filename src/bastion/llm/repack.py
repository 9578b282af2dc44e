"""Whether llama.cpp may repack weights into its extra CPU buffer types (``model.repack: auto``).

Repacking is llama.cpp's default and its fastest CPU path; on CPUs with Intel AMX it is the AMX
path (tile matrix multiplies), 1.7-2.2x the tokens/s of the plain AVX-512 kernels and 2-4x their
prompt speed for the shipped model on 2 cores (``bench/results/amx_repack.txt``).

On those CPUs, a llama.cpp built by GCC 12 (Debian 12's compiler) crashes with SIGSEGV in its
first AMX matrix multiply: GCC 12's ``_tile_loadconfig`` declares an 8-byte memory operand, so
the stores that fill in the rest of the 64-byte tile configuration are dropped as dead and
``ldtilecfg`` faults on garbage. bastion's build (``scripts/llama-cpp/wheel.sh``) compiles
llama-cpp-python with the intrinsic fixed; a llama-cpp-python built elsewhere (an older venv, a
wheel from pip's cache) may not have the fix.

So on an AMX CPU the answer is measured, not assumed: a child process loads the shipped model
with repacking on and evaluates a prompt and a token. A clean exit turns repacking on; a crash
(or anything else) leaves it off. The verdict is kept per llama.cpp CPU library (its SHA-256)
and CPU in the converted-model cache folder (private), so each build is probed once.
Everywhere else repacking stays on, as llama.cpp ships it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.llm._cache import read_verdicts

PROBE_TIMEOUT_S = 120.0
VERDICTS = "repack-probe.json"
_LOCK = threading.Lock()
_MEMO: dict[str, Verdict] = {}


@dataclass(frozen=True)
class Verdict:
    """What the probe found for one llama.cpp build on one CPU."""

    repack: bool
    why: str  # one line, for `bastion init` / `bastion doctor`
    final: bool = True  # False: the probe could not decide (kept for this process only)


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (:attr:`bastion.hardware.info.CpuInfo.amx`)."""
    from bastion.hardware.info import CpuInfo

    return CpuInfo(flags=_cpu_flags()).amx


def amx_kernels(repack: bool) -> bool:
    """Whether weights loaded with ``repack`` run on llama.cpp's AMX kernels here."""
    return repack and has_amx()


def _llama_lib() -> Path | None:
    """Return llama-cpp-python's folder of native libraries (found, not imported)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "lib"


@functools.cache
def _installed_key() -> str | None:
    """Return the installed llama-cpp-python's :func:`_library_key` (hashed once a process)."""
    lib = _llama_lib()
    return None if lib is None else _library_key(lib)


def _library_key(lib: Path) -> str | None:
    """Return a hash of the CPU kernels in ``lib`` and this CPU, or None without them."""
    files = sorted(lib.glob("libggml-cpu*")) if lib.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    model = next((ln for ln in cpuinfo.splitlines() if ln.startswith("model name")), "")
    flags = " ".join(sorted(f for f in _cpu_flags() if f.startswith(("amx", "avx512"))))
    h.update(f"\n{model}\n{flags}".encode())
    return h.hexdigest()


def _cpu_flags() -> list[str]:
    from bastion.hardware.detect import cpu_flags

    return cpu_flags()


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    from bastion._proc import child_env

    return subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                          check=False, env=child_env(), stdin=subprocess.DEVNULL,
                          start_new_session=True)


def probe(model: Path, run: Runner = _run) -> Verdict:
    """Run the repacked kernels on ``model`` in a child process; say whether they work."""
    from bastion._proc import describe_exit

    argv = [sys.executable, "-m", "bastion.llm._repack_probe", str(model)]
    try:
        done = run(argv)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"weight repacking off: the AMX probe did not finish in "
                              f"{PROBE_TIMEOUT_S:g} s", final=False)
    except OSError as exc:
        return Verdict(False, f"weight repacking off: the AMX probe could not start ({exc})",
                       final=False)
    if done.returncode == 0 and done.stdout.strip().endswith("ok"):
        return Verdict(True, "weight repacking on: llama.cpp's AMX kernels passed a probe "
                             "with this build")
    return Verdict(False, "weight repacking off: llama.cpp's AMX kernels crash with this "
                          f"build ({describe_exit(done.returncode)} in a probe; rebuild it "
                          "with `make install` to get bastion's fix)")


def verdict(model: Callable[[], Path], run: Runner = _run) -> Verdict:
    """Return the repack choice for this machine and llama.cpp build (probing once per build).

    ``model`` returns the file to probe with (the shipped model) or raises :class:`ModelError`.
    """
    if not has_amx():
        return Verdict(True, "weight repacking on (llama.cpp's fastest CPU kernels)")
    key = _installed_key()
    if key is None:
        return Verdict(False, "weight repacking off: llama.cpp is not installed to probe")
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
        from bastion.errors import ModelError
        from bastion.llm._cache import private_cache_dir

        try:
            path: Path | None = private_cache_dir() / VERDICTS
        except (ModelError, OSError):
            path = None  # no private folder to keep it in: probe each process
        known = read_verdicts(path)
        if key in known:
            got = Verdict(bool(known[key]["repack"]), str(known[key]["why"]))
        else:
            probed = _probe_with(model, run)
            if probed is not None and probed.final and path is not None:
                _store(path, key, probed)
            got = probed or Verdict(False, "weight repacking off: no shipped model to probe "
                                           "llama.cpp's AMX kernels with (model.repack on "
                                           "forces it)")
        _MEMO[key] = got
        return got


def _probe_with(model: Callable[[], Path], run: Runner) -> Verdict | None:
    from bastion.errors import ModelError

    try:
        path = model()
    except ModelError:
        return None
    return probe(path, run)


def _store(path: Path, key: str, got: Verdict) -> None:
    from bastion.config.paths import write_private

    known = read_verdicts(path)
    known[key] = {"repack": got.repack, "why": got.why}
    with contextlib.suppress(OSError):  # kept in memory then; the next process probes again
        write_private(path, json.dumps(known, indent=1))

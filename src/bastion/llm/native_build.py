"""Whether the installed llama.cpp was built for this CPU's instruction sets.

``make install`` builds llama-cpp-python natively (``scripts/llama-cpp/wheel.sh``: the fastest
code for the CPU that compiles it) and the wheel carries a record of that CPU's extensions
(``llama_cpp/bastion_build.json``, :mod:`bastion.hardware.isa`). The same build on a CPU
without one of them (a venv copied to another box of the home lab, a VM moved to an older
host) dies with SIGILL in its first matrix multiply, in every worker and every restart. So
the model's loaders call :func:`check` before anything native loads: such a build is refused
with one line that names the missing extensions and the fix (``make install`` builds one for
this CPU). A llama-cpp-python built some other way carries no record: nothing to compare, and
a SIGILL there still names the cause (:data:`SIGILL_FIX`).
"""

from __future__ import annotations

import importlib.util
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bastion._extras import require
from bastion.errors import BastionError, ModelError
from bastion.hardware.detect import detect
from bastion.hardware.info import HardwareInfo
from bastion.hardware.isa import cpu_name, current_isa

RECORD_NAME = "bastion_build.json"
REBUILD = ("`make install` (builds llama.cpp for this CPU once, ~5-8 min on 2 cores; each CPU "
           "kind gets its own cached build)")
# what a worker or model server killed by SIGILL tells the user: the usual cause is a native build
# from another CPU, which a record would have caught; without one, this is the only hint
SIGILL_FIX = ("llama.cpp here uses an instruction this CPU lacks (it was built on another "
              f"CPU): rebuild it for this one with {REBUILD}")
GPU_REBUILD = ("rebuild llama.cpp with your GPU's backend: `CMAKE_ARGS=-DGGML_CUDA=on make "
               "install` (NVIDIA, needs the CUDA toolkit; -DGGML_HIP=on for AMD ROCm, "
               "-DGGML_VULKAN=on for Vulkan)")
GPU_FIX = f"{GPU_REBUILD}, or set model.n_gpu_layers 0"
# named first in messages: the extensions whose absence is the usual cause
_MAIN = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_tile", "avx2", "fma",
         "f16c", "avx", "sve", "i8mm", "asimddp")


@dataclass(frozen=True)
class BuildRecord:
    """The CPU a native build was compiled on: its extensions (None: a portable build)."""

    isa: frozenset[str] | None
    cpu: str
    machine: str


class BuiltForAnotherCpu(ModelError):
    """The installed llama.cpp needs instruction-set extensions this CPU lacks."""

    def __init__(self, missing: list[str], built_on: str, here: str) -> None:
        """Name what is missing (the usual culprits first), where it was built, and the fix."""
        self.missing = missing
        self.built_on = built_on
        ordered = [f for f in _MAIN if f in missing] + [f for f in missing if f not in _MAIN]
        shown = ", ".join(ordered[:6]) + (f" and {len(ordered) - 6} more"
                                         if len(ordered) > 6 else "")
        super().__init__(
            f"llama.cpp in this environment was built for another CPU ({built_on}) and uses "
            f"{shown}, which this CPU ({here}) lacks: it would crash (SIGILL) on its first "
            "multiply",
            fix=REBUILD,
        )


class BuiltForAnotherMachine(BuiltForAnotherCpu):
    """The installed llama.cpp was built for another architecture (x86_64 on an ARM box)."""

    def __init__(self, built_for: str, built_on: str, here: str) -> None:
        """Name both architectures and the fix; its libraries would not even load here."""
        ModelError.__init__(
            self,
            f"llama.cpp in this environment was built for {built_for} ({built_on}); this "
            f"machine is {here}: its libraries cannot load here",
            fix=REBUILD,
        )
        self.missing = []
        self.built_on = built_on


def installed_record() -> BuildRecord | None:
    """Return the installed llama-cpp-python's build record; None without one.

    Found without importing llama_cpp, whose library this record decides whether to load.
    """
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / RECORD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    isa = data.get("isa")
    return BuildRecord(frozenset(str(f) for f in isa) if isinstance(isa, list) else None,
                       str(data.get("cpu") or "unknown CPU"), str(data.get("machine") or ""))


def missing_isa(record: BuildRecord | None, here: list[str] | None) -> list[str]:
    """Return the recorded extensions this CPU lacks, sorted ([] where a side is unknown)."""
    if record is None or record.isa is None or here is None:
        return []
    return sorted(record.isa - set(here))


def refusal(record: BuildRecord | None = None, here: list[str] | None = None,
            machine: str | None = None) -> BuiltForAnotherCpu | None:
    """Return why the installed build cannot run on this CPU, or None where it can.

    Defaults: the installed build's record, this CPU (``/proc/cpuinfo``) and this machine's
    architecture (``platform.machine()``, as the record has it).
    """
    record = installed_record() if record is None else record
    machine = platform.machine() if machine is None else machine
    if record is not None and record.machine and machine and record.machine != machine:
        return BuiltForAnotherMachine(record.machine, record.cpu, machine)
    missing = missing_isa(record, current_isa() if here is None else here)
    return BuiltForAnotherCpu(missing, record.cpu, cpu_name()) if missing and record else None


def check(record: BuildRecord | None = None, here: list[str] | None = None,
          machine: str | None = None) -> None:
    """Raise :func:`refusal`'s :class:`BuiltForAnotherCpu`, if any (the loaders call this)."""
    refused = refusal(record, here, machine)
    if refused is not None:
        raise refused


def import_checked(module: str = "llama_cpp", *, feature: str) -> ModuleType:
    """Import llama-cpp-python (or ``module`` of it) only where it can run, else one line.

    A build for another CPU or architecture is refused first (:func:`check`: nothing native
    loads); a library that still does not load is :class:`bastion.errors.BrokenExtraError`
    with the rebuild as its fix. ``bastion doctor`` and ``bastion node serve`` import it so;
    the model loaders check in :func:`bastion.llm.source.prepare_source`.
    """
    check()
    return require(module, extra="local", feature=feature, broken_fix=REBUILD)


def describe() -> str:
    """One line for ``bastion init``/``doctor`` on a build :func:`check` let through."""
    record = installed_record()
    if record is None:
        return "no build record (not built by `make install`): its CPU target is unknown"
    if record.isa is None:
        return "a portable build (no CPU-specific target)"
    if current_isa() is None:
        return f"built on {record.cpu}; this CPU does not say which extensions it has"
    return f"built for this CPU's instruction sets (on {record.cpu}, {len(record.isa)} extensions)"


def gpu_layers(requested: int) -> tuple[int, str | None]:
    """Return the layers that really go to a GPU for ``requested`` ones, and why not.

    llama.cpp built without a GPU backend (what ``make install`` builds by default: CPU only)
    ignores ``n_gpu_layers`` without a word, so a model sized for a GPU would run on the CPU.
    Returns ``(0, reason)`` there, ``(requested, None)`` otherwise.
    """
    if requested == 0:  # (-1 is every layer)
        return 0, None
    llama_cpp = import_checked(feature="the embedded model")
    if bool(llama_cpp.llama_supports_gpu_offload()):
        return requested, None
    return 0, (f"model.n_gpu_layers {requested} has no effect: this llama.cpp build has no GPU "
               "backend, so the model runs on the CPU")


def detect_hardware() -> HardwareInfo:
    """Detect the hardware as this llama.cpp build can use it (recommendations start here).

    A GPU that the installed llama.cpp has no backend for (``make install`` builds for the CPU)
    does not count: ``gpu_backend`` is False and the accelerator is the CPU (the
    recommendation says why). Without llama-cpp-python, or with a build for another CPU,
    nothing is asked of it.
    """
    hw = detect()
    if not hw.gpus or importlib.util.find_spec("llama_cpp") is None or refusal() is not None:
        return hw
    try:
        _, ignored = gpu_layers(-1)
    except BastionError:  # a library that does not load: doctor says so
        return hw
    hw.gpu_backend = ignored is None
    return hw

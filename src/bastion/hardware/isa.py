"""The CPU's instruction-set extensions: what code compiled for one CPU may use on another.

``make install`` builds llama.cpp natively (``-march=native``: the fastest code for the CPU
that compiles it). Such a build dies with SIGILL on a CPU that lacks one of the builder's
extensions, e.g. a build from an AVX-512 EPYC on an AVX2-only Core i5 of the same home lab.
So ``scripts/llama-cpp/wheel.sh`` keys its cached wheel by these flags (each CPU kind gets its
own build; a shared home or a copied cache never hands one CPU's build to another) and puts a
record of them into the wheel (:mod:`bastion.llm.native_build` compares it with this CPU
before anything native loads).

Only extensions a compiler emits code for count: ``constant_tsc``, ``hypervisor`` or a
microcode's mitigation flags do not change what runs, so they change neither key nor verdict.

Stdlib only, and runnable by path before bastion is installed (wheel.sh runs it)::

    python src/bastion/hardware/isa.py           # the flags, one line (the wheel's cache key)
    python src/bastion/hardware/isa.py --record  # the JSON record the wheel carries

``BASTION_CPUINFO`` names a file to read instead of ``/proc/cpuinfo`` (the tests use another
machine's captured file).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys

CPUINFO_ENV = "BASTION_CPUINFO"

# /proc/cpuinfo names of the x86 extensions GCC and Clang emit instructions for under
# -march=native without being asked (pni is SSE3, abm is LZCNT, 3dnowprefetch is PREFETCHW);
# those only an intrinsic reaches (aes, sha_ni, rdrand, xsave, clwb ...) are left out: ggml
# calls none of them
_X86_ISA = re.compile(
    r"sse\w*|pni|ssse3|avx\w*|amx\w*|fma4?|xop|f16c|bmi[12]|popcnt|abm|movbe|gfni|cx16"
    r"|lahf_lm|tbm|3dnowprefetch"
)


def _first_block(text: str) -> dict[str, str]:
    block: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if block:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            block.setdefault(key.strip().lower(), value.strip())
    return block


def isa_from_cpuinfo(text: str) -> list[str]:
    """Return the instruction-set extensions in a Linux ``/proc/cpuinfo``, sorted.

    x86: the ``flags`` a compiler emits code for; ARM: every ``Features`` entry (each is one).
    """
    first = _first_block(text)
    if "flags" in first:
        return sorted({f for f in first["flags"].split() if _X86_ISA.fullmatch(f)})
    return sorted(set(first.get("features", "").split()))


def isa_from_sysctl(text: str) -> list[str]:
    """Return the extensions macOS reports as ``hw.optional.NAME: 1`` (``sysctl hw.optional``)."""
    out = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip() == "1" and key.strip().startswith("hw.optional."):
            out.add(key.strip().removeprefix("hw.optional.").lower())
    return sorted(out)


def _cpuinfo_text() -> str | None:
    path = os.environ.get(CPUINFO_ENV) or "/proc/cpuinfo"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def current_isa() -> list[str] | None:
    """Return the running CPU's extensions; None where the system does not say."""
    text = _cpuinfo_text()
    if text is not None:
        return isa_from_cpuinfo(text)
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "hw.optional"], capture_output=True, text=True,  # noqa: S607
                                 timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return isa_from_sysctl(out)
    return None


# ARM's /proc/cpuinfo names no model: its "CPU part" (implementer 0x41, Arm Ltd's designs)
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1", "0xd4f": "Neoverse-V2", "0xd49": "Neoverse-N2",
}


def arm_cpu_name(block: dict[str, str]) -> str:
    """Name an ARM core from a /proc/cpuinfo processor block (``ARM Cortex-A72``)."""
    part = block.get("cpu part", "").lower()
    return f"ARM {ARM_PARTS.get(part, part or 'CPU')}"


def _board_model(text: str) -> str | None:
    """Return the board's name from the last block of an ARM /proc/cpuinfo (a Raspberry Pi's)."""
    for line in reversed(text.splitlines()):
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "model" and value.strip():
            return value.strip()
    return None


def cpu_name() -> str:
    """Return the CPU's model name for messages (/proc/cpuinfo's, else the machine's)."""
    text = _cpuinfo_text() or ""
    first = _first_block(text)
    if first.get("model name"):
        return first["model name"]
    if "features" in first:  # ARM: the board (a Raspberry Pi), else the core
        return _board_model(text) or arm_cpu_name(first)
    return first.get("hardware") or platform.machine() or "this CPU"


def record(portable: bool = False) -> dict[str, object]:
    """Return what a build records about the CPU that compiled it.

    ``portable``: a build for no one CPU (``GGML_NATIVE=OFF``) needs no extension beyond its
    target's, so its ``isa`` is null.
    """
    return {"isa": None if portable else current_isa(), "cpu": cpu_name(),
            "machine": platform.machine()}


def main(argv: list[str]) -> int:
    """Print the key line (the machine and its extensions) or, with ``--record``, the record."""
    if argv[:1] == ["--record"]:
        print(json.dumps(record(portable="--portable" in argv), sort_keys=True))
        return 0
    isa = current_isa()
    print(platform.machine(), " ".join(isa) if isa is not None else "unknown")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

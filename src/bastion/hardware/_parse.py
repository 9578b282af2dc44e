"""Parsers for the outputs of /proc, sysctl, nvidia-smi and rocm-smi (pure functions, unit-tested
against captured outputs in tests/fixtures/hardware)."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from bastion.hardware.info import CpuInfo, GpuInfo
from bastion.hardware.isa import arm_cpu_name

# Query used for nvidia-smi; parse_nvidia_smi accepts it with or without header/units.
NVIDIA_QUERY = "name,memory.total,memory.free,driver_version,compute_cap"
SYSCTL_KEYS = (
    "machdep.cpu.brand_string",
    "hw.memsize",
    "hw.ncpu",
    "hw.physicalcpu",
    "hw.optional.arm64",
    "hw.optional.neon",
    "hw.optional.avx2_0",
    "hw.optional.avx512f",
)
_X86_FLAGS = ("avx", "avx2", "avx512f", "fma", "f16c", "amx_tile", "amx_int8", "amx_bf16")


def _blocks(text: str) -> list[dict[str, str]]:
    """Split /proc/cpuinfo into per-processor key/value blocks (plus trailing board info)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip().lower()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def parse_proc_cpuinfo(text: str) -> CpuInfo:
    """Parse Linux ``/proc/cpuinfo`` (x86 and ARM layouts)."""
    blocks = _blocks(text)
    procs = [b for b in blocks if "processor" in b]
    board = {k: v for b in blocks if "processor" not in b for k, v in b.items()}
    first = procs[0] if procs else {}
    logical = len(procs) or 1

    # Physical cores: distinct (physical id, core id) pairs on x86; ARM has no SMT.
    pairs = {(b.get("physical id", "0"), b["core id"]) for b in procs if "core id" in b}
    physical = len(pairs) or logical

    if "flags" in first:  # x86
        raw = set(first["flags"].split())
        flags = [f for f in _X86_FLAGS if f in raw]
        arch = "x86_64" if "lm" in raw else "x86"
        model = first.get("model name", "unknown x86 CPU")
    else:  # ARM: "Features"; NEON is "asimd" on aarch64 and "neon" on 32-bit ARM
        raw = set(first.get("features", "").split())
        flags = ["neon"] if raw & {"asimd", "neon"} else []
        if "sve" in raw:
            flags.append("sve")
        arch = "aarch64" if first.get("cpu architecture", "") == "8" else "arm"
        model = board.get("model") or first.get("model name") or arm_cpu_name(first)
    return CpuInfo(model=model, arch=arch, logical_cores=logical, physical_cores=physical,
                   flags=flags)


def parse_meminfo(text: str) -> int:
    """Return MemTotal from ``/proc/meminfo`` in MiB (0 if absent)."""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else 0


def parse_sysctl(text: str) -> dict[str, str]:
    """Parse ``sysctl KEY ...`` output (``key: value`` lines; unknown keys are simply absent)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def cpu_from_sysctl(values: dict[str, str], machine: str) -> CpuInfo:
    """Build :class:`CpuInfo` from macOS sysctl values and ``uname -m``."""
    logical = _int(values.get("hw.ncpu"), 1) or 1
    physical = _int(values.get("hw.physicalcpu"), logical) or logical
    flags: list[str] = []
    if values.get("hw.optional.avx2_0") == "1":
        flags += ["avx", "avx2", "fma"]
    if values.get("hw.optional.avx512f") == "1":
        flags.append("avx512f")
    arm = machine == "arm64" or values.get("hw.optional.arm64") == "1"
    if arm and values.get("hw.optional.neon", "1") == "1":  # every Apple Silicon chip has NEON
        flags.append("neon")
    return CpuInfo(
        model=values.get("machdep.cpu.brand_string", "unknown CPU"),
        arch="arm64" if arm else "x86_64",
        logical_cores=logical,
        physical_cores=physical,
        flags=flags,
    )


def ram_from_sysctl(values: dict[str, str]) -> int:
    """Return ``hw.memsize`` in MiB."""
    return _int(values.get("hw.memsize")) // (1024 * 1024)


def apple_gpu(cpu: CpuInfo, ram_mb: int) -> GpuInfo | None:
    """Apple Silicon's GPU: unified memory, of which Metal may use about three quarters."""
    if cpu.arch != "arm64" or not cpu.model.startswith("Apple"):
        return None
    return GpuInfo(name=f"{cpu.model} GPU", vendor="apple", memory_mb=ram_mb * 3 // 4,
                   compute="metal")


def _mib(cell: str) -> int:
    match = re.search(r"[\d.]+", cell)
    return int(float(match.group(0))) if match else 0


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=<NVIDIA_QUERY> --format=csv[,noheader][,nounits]``."""
    gpus: list[GpuInfo] = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if not row or not row[0].strip() or row[0].strip().lower() == "name":
            continue
        cells = [c.strip() for c in row] + [""] * 5
        gpus.append(
            GpuInfo(
                name=cells[0],
                vendor="nvidia",
                memory_mb=_mib(cells[1]),
                free_mb=_mib(cells[2]) if cells[2] and cells[2] != "[N/A]" else None,
                driver=cells[3] or None,
                compute=cells[4] if cells[4] and cells[4] != "[N/A]" else None,
            )
        )
    return gpus


def _ci(mapping: dict[str, Any], *names: str) -> Any:
    """Case-insensitive lookup (rocm-smi changed 'Card series' to 'Card Series')."""
    lower = {k.lower(): v for k, v in mapping.items()}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def parse_rocm_smi(text: str) -> list[GpuInfo]:
    """Parse ``rocm-smi --showproductname --showmeminfo vram --json``."""
    data = json.loads(text)
    if not isinstance(data, dict):
        return []
    system = data.get("system", {}) if isinstance(data.get("system"), dict) else {}
    driver = _ci(system, "Driver version")
    gpus: list[GpuInfo] = []
    for key in sorted(k for k in data if k.startswith("card")):
        card = data[key]
        if not isinstance(card, dict):
            continue
        total = _int(_ci(card, "VRAM Total Memory (B)"))
        used = _int(_ci(card, "VRAM Total Used Memory (B)"))
        name = _ci(card, "Card Series", "Card series", "Card Model") or key
        gpus.append(
            GpuInfo(
                name=str(name),
                vendor="amd",
                memory_mb=total // (1024 * 1024),
                free_mb=(total - used) // (1024 * 1024) if total else None,
                driver=str(driver) if driver else None,
                compute=_ci(card, "GFX Version"),
            )
        )
    return gpus

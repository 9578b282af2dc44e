"""What the hardware detection found: plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Accelerator = Literal["cpu", "cuda", "rocm", "metal"]
_ACCEL: dict[str, Accelerator] = {"nvidia": "cuda", "amd": "rocm", "apple": "metal"}


@dataclass(slots=True)
class CpuInfo:
    """The CPU: model, logical and physical cores, SIMD features that matter to llama.cpp."""

    model: str = "unknown CPU"
    arch: str = "unknown"
    logical_cores: int = 1
    physical_cores: int = 1
    # subset of: avx, avx2, avx512f, fma, f16c, amx_tile, amx_int8, amx_bf16, neon
    flags: list[str] = field(default_factory=list)

    @property
    def avx2(self) -> bool:
        """Whether AVX2 is available (the baseline for fast x86 inference)."""
        return "avx2" in self.flags

    @property
    def avx512(self) -> bool:
        """Whether AVX-512 (foundation) is available."""
        return "avx512f" in self.flags

    @property
    def amx(self) -> bool:
        """Whether the CPU has Intel AMX tiles (llama.cpp's repacked weights use them)."""
        return "amx_int8" in self.flags or "amx_tile" in self.flags

    @property
    def neon(self) -> bool:
        """Whether ARM NEON (ASIMD) is available."""
        return "neon" in self.flags


@dataclass(slots=True)
class GpuInfo:
    """One GPU."""

    name: str
    vendor: Literal["nvidia", "amd", "apple"]
    memory_mb: int  # total; for Apple Silicon the unified memory the GPU may use
    free_mb: int | None = None
    driver: str | None = None
    compute: str | None = None  # CUDA compute capability or AMD gfx target


@dataclass(slots=True)
class HardwareInfo:
    """Everything :func:`bastion.hardware.detect` found."""

    cpu: CpuInfo
    ram_mb: int
    gpus: list[GpuInfo] = field(default_factory=list)
    os: str = "unknown"
    notes: list[str] = field(default_factory=list)  # what could not be probed and why
    # whether the installed llama.cpp can use the GPUs (None: not asked); False: the CPU it is
    gpu_backend: bool | None = None

    @property
    def accelerator(self) -> Accelerator:
        """The accelerator a model should use: the first GPU's kind, else the CPU."""
        if not self.gpus or self.gpu_backend is False:
            return "cpu"
        return _ACCEL[self.gpus[0].vendor]

    @property
    def gpu_memory_mb(self) -> int:
        """Total memory of the GPUs of the chosen kind (layers can be split across them)."""
        if not self.gpus:
            return 0
        vendor = self.gpus[0].vendor
        return sum(g.memory_mb for g in self.gpus if g.vendor == vendor)

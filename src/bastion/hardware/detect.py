"""Probe this machine: CPU, RAM, NVIDIA (nvidia-smi or NVML), AMD (rocm-smi), Apple Silicon."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from bastion.hardware import _parse
from bastion.hardware.info import CpuInfo, GpuInfo, HardwareInfo

# Runs argv and returns stdout, or None if the tool is missing or failed without output.
Runner = Callable[[Sequence[str]], str | None]


def run_tool(argv: Sequence[str], timeout_s: float = 5.0) -> str | None:
    """Run a probe tool; missing tools, timeouts and empty failures give ``None``."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 and not proc.stdout.strip():
        return None
    return proc.stdout  # sysctl exits non-zero for unknown keys but prints the known ones


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _nvml_gpus() -> list[GpuInfo]:
    """NVIDIA GPUs through NVML (package ``nvidia-ml-py``), when nvidia-smi is not on PATH."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: NVMLError_LibraryNotFound and friends
        return []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(
                GpuInfo(
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    vendor="nvidia",
                    memory_mb=int(mem.total) // (1024 * 1024),
                    free_mb=int(mem.free) // (1024 * 1024),
                    driver=driver.decode() if isinstance(driver, bytes) else str(driver),
                    compute=f"{major}.{minor}",
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _nvidia(run: Runner) -> list[GpuInfo]:
    out = run(["nvidia-smi", f"--query-gpu={_parse.NVIDIA_QUERY}", "--format=csv,noheader,nounits"])
    if out is None:  # drivers before 510 do not know compute_cap
        out = run(["nvidia-smi", "--query-gpu=name,memory.total,memory.free,driver_version",
                   "--format=csv,noheader,nounits"])
    if out:
        return _parse.parse_nvidia_smi(out)
    return _nvml_gpus()


def _amd(run: Runner) -> list[GpuInfo]:
    out = run(["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"])
    if not out:
        return []
    try:
        return _parse.parse_rocm_smi(out)
    except ValueError:
        return []


def cpu_flags(read: Callable[[str], str | None] = _read) -> list[str]:
    """Return the CPU feature flags that matter to llama.cpp (cheap: /proc/cpuinfo only)."""
    cpuinfo = read("/proc/cpuinfo")
    return _parse.parse_proc_cpuinfo(cpuinfo).flags if cpuinfo else []


def _linux_cpu_ram(read: Callable[[str], str | None]) -> tuple[CpuInfo, int]:
    cpuinfo = read("/proc/cpuinfo")
    cpu = _parse.parse_proc_cpuinfo(cpuinfo) if cpuinfo else CpuInfo()
    if not cpuinfo:
        cpu.logical_cores = cpu.physical_cores = os.cpu_count() or 1
        cpu.arch = platform.machine()
    meminfo = read("/proc/meminfo")
    return cpu, _parse.parse_meminfo(meminfo) if meminfo else 0


def detect(
    *,
    system: str | None = None,
    machine: str | None = None,
    run: Runner = run_tool,
    read: Callable[[str], str | None] = _read,
) -> HardwareInfo:
    """Probe the machine. ``run``/``read`` are injectable so every path can be tested."""
    system = system or platform.system()
    machine = machine or platform.machine()
    notes: list[str] = []
    gpus: list[GpuInfo] = []
    if system == "Darwin":
        values = _parse.parse_sysctl(run(["sysctl", *_parse.SYSCTL_KEYS]) or "")
        cpu = _parse.cpu_from_sysctl(values, machine)
        ram_mb = _parse.ram_from_sysctl(values)
        apple = _parse.apple_gpu(cpu, ram_mb)
        if apple:
            gpus.append(apple)
    else:
        cpu, ram_mb = _linux_cpu_ram(read)
        gpus = _nvidia(run) or _amd(run)
        if not gpus:
            notes.append("no NVIDIA (nvidia-smi/NVML) or AMD (rocm-smi) GPU found")
    if not ram_mb:
        try:
            import psutil

            ram_mb = int(psutil.virtual_memory().total) // (1024 * 1024)
        except Exception:  # psutil is a dependency; this only guards exotic platforms
            notes.append("could not read the amount of RAM")
    return HardwareInfo(cpu=cpu, ram_mb=ram_mb, gpus=gpus, os=f"{system} {machine}", notes=notes)

"""Detection parsers against captured outputs of /proc, sysctl, nvidia-smi and rocm-smi."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from bastion.hardware import _parse, detect

FIX = Path(__file__).parents[2] / "fixtures" / "hardware"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def test_amd_epyc_cpuinfo() -> None:
    cpu = _parse.parse_proc_cpuinfo(fixture("cpuinfo_amd_epyc_avx2.txt"))
    assert cpu.model == "AMD EPYC"
    assert (cpu.logical_cores, cpu.physical_cores) == (2, 2)
    assert cpu.avx2 and not cpu.avx512 and not cpu.neon
    assert cpu.arch == "x86_64"


def test_intel_xeon_smt_and_avx512() -> None:
    cpu = _parse.parse_proc_cpuinfo(fixture("cpuinfo_intel_xeon_avx512.txt"))
    assert cpu.model == "Intel(R) Xeon(R) Gold 6230R CPU @ 2.10GHz"
    assert cpu.logical_cores == 8
    assert cpu.physical_cores == 4  # 2 sockets x 2 cores, hyper-threads not counted
    assert cpu.avx2 and cpu.avx512


@pytest.mark.parametrize(
    ("name", "model", "arch", "sve"),
    [
        ("cpuinfo_rpi4_aarch64.txt", "Raspberry Pi 4 Model B Rev 1.4", "aarch64", False),
        ("cpuinfo_graviton3_aarch64.txt", "ARM Neoverse-V1", "aarch64", True),
        ("cpuinfo_rpi3_armv7.txt", "Raspberry Pi 3 Model B Rev 1.2", "arm", False),
    ],
)
def test_arm_cpuinfo_neon(name: str, model: str, arch: str, sve: bool) -> None:
    cpu = _parse.parse_proc_cpuinfo(fixture(name))
    assert cpu.model == model
    assert cpu.arch == arch
    assert cpu.neon and not cpu.avx2
    assert ("sve" in cpu.flags) is sve
    assert cpu.physical_cores == cpu.logical_cores


def test_meminfo() -> None:
    assert _parse.parse_meminfo(fixture("meminfo_24g.txt")) == 24683656 // 1024
    assert _parse.parse_meminfo(fixture("meminfo_8g.txt")) == 7811
    assert _parse.parse_meminfo("garbage") == 0


def test_sysctl_apple_silicon() -> None:
    values = _parse.parse_sysctl(fixture("sysctl_apple_m2_pro.txt"))
    cpu = _parse.cpu_from_sysctl(values, "arm64")
    assert cpu.model == "Apple M2 Pro" and cpu.arch == "arm64"
    assert cpu.neon and cpu.physical_cores == 12
    assert _parse.ram_from_sysctl(values) == 32768
    gpu = _parse.apple_gpu(cpu, 32768)
    assert gpu is not None and gpu.vendor == "apple" and gpu.memory_mb == 24576


def test_sysctl_intel_mac() -> None:
    values = _parse.parse_sysctl(fixture("sysctl_intel_mac.txt"))
    cpu = _parse.cpu_from_sysctl(values, "x86_64")
    assert cpu.avx2 and not cpu.avx512 and not cpu.neon
    assert (cpu.logical_cores, cpu.physical_cores) == (16, 8)
    assert _parse.apple_gpu(cpu, 16384) is None


def test_nvidia_smi_noheader() -> None:
    (gpu,) = _parse.parse_nvidia_smi(fixture("nvidia_smi_rtx4090.csv"))
    assert gpu.name == "NVIDIA GeForce RTX 4090"
    assert (gpu.memory_mb, gpu.free_mb) == (24564, 23817)
    assert gpu.driver == "550.54.14" and gpu.compute == "8.9"


def test_nvidia_smi_with_header_and_units() -> None:
    gpus = _parse.parse_nvidia_smi(fixture("nvidia_smi_2x_a100_header.csv"))
    assert [g.memory_mb for g in gpus] == [81920, 81920]
    assert [g.free_mb for g in gpus] == [81041, 60211]
    assert all(g.name == "NVIDIA A100-SXM4-80GB" for g in gpus)


def test_nvidia_smi_without_compute_cap() -> None:
    (gpu,) = _parse.parse_nvidia_smi("Tesla T4, 15360, 15101, 470.82.01\n")
    assert gpu.compute is None and gpu.memory_mb == 15360


def test_rocm_smi_new_keys() -> None:
    (gpu,) = _parse.parse_rocm_smi(fixture("rocm_smi_rx7900xtx.json"))
    assert gpu.name == "Navi 31 [Radeon RX 7900 XT/7900 XTX]"
    assert gpu.vendor == "amd" and gpu.memory_mb == 24560
    assert gpu.compute == "gfx1100" and gpu.driver == "6.7.0"
    assert gpu.free_mb == (25753026560 - 1221726208) // 2**20


def test_rocm_smi_old_keys_two_cards() -> None:
    gpus = _parse.parse_rocm_smi(fixture("rocm_smi_2x_mi250x_old.json"))
    assert [g.name for g in gpus] == ["AMD INSTINCT MI250X"] * 2
    assert gpus[0].memory_mb == 65520


def _runner(outputs: dict[str, str | None]):  # type: ignore[no-untyped-def]
    seen: list[list[str]] = []

    def run(argv: Sequence[str]) -> str | None:
        seen.append(list(argv))
        return outputs.get(argv[0])

    return run, seen


def test_detect_linux_nvidia_path() -> None:
    run, seen = _runner({"nvidia-smi": fixture("nvidia_smi_rtx4090.csv")})
    files = {"/proc/cpuinfo": fixture("cpuinfo_intel_xeon_avx512.txt"),
             "/proc/meminfo": fixture("meminfo_24g.txt")}
    hw = detect(system="Linux", machine="x86_64", run=run, read=files.get)
    assert hw.accelerator == "cuda" and hw.gpu_memory_mb == 24564
    assert hw.cpu.physical_cores == 4 and hw.ram_mb == 24105
    assert seen[0][:2] == ["nvidia-smi", f"--query-gpu={_parse.NVIDIA_QUERY}"]


def test_detect_linux_amd_when_no_nvidia() -> None:
    run, seen = _runner({"rocm-smi": fixture("rocm_smi_rx7900xtx.json")})
    files = {"/proc/cpuinfo": fixture("cpuinfo_amd_epyc_avx2.txt"),
             "/proc/meminfo": fixture("meminfo_8g.txt")}
    hw = detect(system="Linux", machine="x86_64", run=run, read=files.get)
    assert hw.accelerator == "rocm"
    assert [a[0] for a in seen] == ["nvidia-smi", "nvidia-smi", "rocm-smi"]


def test_detect_macos() -> None:
    run, seen = _runner({"sysctl": fixture("sysctl_apple_m2_pro.txt")})
    hw = detect(system="Darwin", machine="arm64", run=run, read=lambda p: None)
    assert hw.accelerator == "metal" and hw.cpu.model == "Apple M2 Pro"
    assert hw.ram_mb == 32768
    assert seen == [["sysctl", *_parse.SYSCTL_KEYS]]


def test_detect_this_machine_for_real() -> None:
    """The real probes on the host (no fakes): sane numbers come back."""
    import os

    hw = detect()
    assert hw.cpu.logical_cores == os.cpu_count()
    assert 1 <= hw.cpu.physical_cores <= hw.cpu.logical_cores
    assert hw.ram_mb > 256

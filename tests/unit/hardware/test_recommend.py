"""Model recommendations from detected hardware."""

from __future__ import annotations

from bastion.hardware import CpuInfo, GpuInfo, HardwareInfo, recommend


def cpu(cores: int, flags: list[str]) -> CpuInfo:
    return CpuInfo(model="test", arch="x86_64", logical_cores=cores * 2, physical_cores=cores,
                   flags=flags)


def test_small_cpu_box_gets_small_q4_model() -> None:
    rec = recommend(HardwareInfo(cpu(2, ["avx2"]), ram_mb=24 * 1024))
    assert rec.size_b == 3 and rec.quant == "Q4_K_M"
    assert rec.gpu_layers == 0 and rec.threads == 2
    assert rec.context == 8192  # CPU cap even with lots of spare RAM


def test_low_ram_limits_size_and_context() -> None:
    rec = recommend(HardwareInfo(cpu(8, ["avx2"]), ram_mb=4 * 1024))
    assert rec.size_b == 1.5
    assert rec.context == 2048


def test_no_simd_means_tiny_model() -> None:
    rec = recommend(HardwareInfo(cpu(16, []), ram_mb=64 * 1024))
    assert rec.size_b <= 1.5
    assert any("AVX2" in r for r in rec.reasons)


def test_big_nvidia_gpu_gets_larger_model_and_better_quant() -> None:
    gpu = GpuInfo("NVIDIA GeForce RTX 4090", "nvidia", 24564)
    rec = recommend(HardwareInfo(cpu(8, ["avx2"]), ram_mb=64 * 1024, gpus=[gpu]))
    assert rec.size_b == 32 and rec.quant == "Q4_K_M"  # 32B only fits in 4 bits
    assert rec.gpu_layers == -1


def test_gpu_with_room_upgrades_quantisation() -> None:
    gpu = GpuInfo("NVIDIA A100-SXM4-80GB", "nvidia", 81920)
    rec = recommend(HardwareInfo(cpu(32, ["avx2", "avx512f"]), ram_mb=512 * 1024, gpus=[gpu]))
    assert rec.size_b == 70 and rec.quant == "Q5_K_M"
    rec2 = recommend(HardwareInfo(cpu(32, ["avx2"]), ram_mb=512 * 1024, gpus=[gpu, gpu]))
    assert rec2.size_b == 70 and rec2.quant == "Q8_0"  # two cards: layers split across both
    assert rec2.context >= 16384


def test_apple_silicon_uses_unified_memory() -> None:
    apple = CpuInfo(model="Apple M2 Pro", arch="arm64", logical_cores=12, physical_cores=12,
                    flags=["neon"])
    gpu = GpuInfo("Apple M2 Pro GPU", "apple", 24576)
    rec = recommend(HardwareInfo(apple, ram_mb=32768, gpus=[gpu]))
    assert rec.size_b == 32 and rec.quant == "Q4_K_M"  # 75% of 32 GiB for Metal
    assert rec.gpu_layers == -1


def test_every_size_names_a_repo_to_pull() -> None:
    from bastion.hardware.recommend import REPOS, SIZES

    assert {m for _, m in SIZES} == set(REPOS)
    rec = recommend(HardwareInfo(cpu(2, ["avx2"]), ram_mb=24 * 1024))
    assert rec.pull_spec == "bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M"
    assert any(rec.repo in r for r in rec.reasons)


def test_a_gpu_the_llama_cpp_build_cannot_use_is_sized_for_the_cpu() -> None:
    gpu = GpuInfo("NVIDIA GeForce RTX 4070", "nvidia", 12282)
    cpu = CpuInfo("x", "x86_64", 2, 2, ["avx2"])
    usable = recommend(HardwareInfo(cpu, 24 * 1024, [gpu], gpu_backend=True))
    unusable = recommend(HardwareInfo(cpu, 24 * 1024, [gpu], gpu_backend=False))
    assert usable.gpu_layers == -1 and unusable.gpu_layers == 0
    assert unusable.size_b <= 3 < usable.size_b
    assert unusable.reasons[0].startswith("NVIDIA GeForce RTX 4070 found, but the installed "
                                          "llama.cpp has no GPU backend")

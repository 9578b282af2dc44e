"""bastion's patched llama.cpp sources still build for ARM (Raspberry Pi 5, Graviton, Ampere):
every file the patches and force-included headers touch is compiled for aarch64 by the real
cross compiler, as wheel.sh compiles it (the same headers force-included, llamafile's sgemm on),
for ARMv8.2 with dot products and for ARMv8.6 with i8mm (llama.cpp's own two-row kernels).
The x86 kernels are compiled out there; the switches bastion.llm.kernels calls are exported.
No ARM machine is at hand, so this is the check that `make install` on one is not broken."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real_model]
pytest.importorskip("llama_cpp")

HERE = Path(__file__).parents[3] / "scripts" / "llama-cpp"
TARGETS = ("armv8.2-a+dotprod+fp16", "armv8.6-a+dotprod+i8mm+fp16")
C_FILES = ("ggml-cpu.c", "quants.c", "arch/arm/quants.c")
CXX_FILES = ("llamafile/sgemm.cpp", "amx/mmq.cpp")


def _sources() -> Path:
    marker = Path(sys.prefix) / ".llama-cpp-src"
    assert marker.is_file(), "no record of the patched sources: make install-dev rebuilds them"
    return Path(marker.read_text(encoding="utf-8").strip())


@pytest.mark.parametrize("target", TARGETS)
def test_the_patched_sources_compile_for_aarch64(target: str, tmp_path: Path) -> None:
    cc, cxx = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("aarch64-linux-gnu-g++")
    if not (cc and cxx):
        pytest.skip("no aarch64 cross compiler (scripts/system-deps.sh installs "
                    "gcc-aarch64-linux-gnu and g++-aarch64-linux-gnu)")
    ggml = _sources()
    cpu = ggml / "src" / "ggml-cpu"
    assert "bastion_vec_dot_rows" in (cpu / "ggml-cpu.c").read_text(), "not the patched sources"
    common = [f"-march={target}", "-O1", "-D_GNU_SOURCE", "-DGGML_USE_LLAMAFILE", f"-I{cpu}",
              f"-I{ggml / 'src'}", f"-I{ggml / 'include'}", "-c"]
    jobs = [[cc, "-std=c11", "-include", str(HERE / "sgemm_gate.h"), *common, str(cpu / f),
             "-o", str(tmp_path / (f.replace("/", "_") + ".o"))] for f in C_FILES]
    jobs += [[cxx, "-std=c++17", "-include", str(HERE / "amx_tile_config_fix.h"), *common,
              str(cpu / f), "-o", str(tmp_path / (f.replace("/", "_") + ".o"))]
             for f in CXX_FILES]
    procs = [subprocess.Popen(j, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for j in jobs]
    for job, proc in zip(jobs, procs, strict=True):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{job[-3]} for {target}:\n{out[-3000:]}"
    symbols = subprocess.run(["aarch64-linux-gnu-nm", str(tmp_path / "ggml-cpu.c.o")],
                             capture_output=True, text=True, check=True).stdout
    for name in ("bastion_set_dot_rows", "bastion_dot2_built", "bastion_set_sgemm_min_n"):
        assert f" {name}\n" in symbols, name
    # the x86 kernels are not there: no AVX2 on ARM
    arm = subprocess.run(["aarch64-linux-gnu-nm", str(tmp_path / "arch_arm_quants.c.o")],
                         capture_output=True, text=True, check=True).stdout
    assert "bastion_dot2" not in arm

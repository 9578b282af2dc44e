"""bastion's multi-row VNNI kernels for llama.cpp's AMX backend (scripts/llama-cpp/
amx_small_batch.patch), compiled from the sources the wheel was built from and checked bit for
bit against llama.cpp's own one-row kernel on the same packed weights.

They run on AVX-512 VNNI, so this runs on CPUs without AMX too (only the AMX tiles need AMX);
on a CPU with AMX, tests/integration/llm/test_batch_kernels.py also runs them inside the model.
A check of all-zero results counts as a mismatch (the program fails on it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real_model]
llama_cpp = pytest.importorskip("llama_cpp")

NEEDS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "f16c")


def _flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_the_multi_row_kernels_give_each_row_exactly_the_one_row_kernels_result(
        tmp_path: Path) -> None:
    missing = [f for f in NEEDS if f not in _flags()]
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(missing)}: the kernels cannot run here")
    cxx = shutil.which("g++")
    assert cxx, "no C++ compiler: make system-deps installs g++"
    marker = Path(sys.prefix) / ".llama-cpp-src"
    assert marker.is_file(), "no record of the patched sources: make install-dev rebuilds them"
    ggml = Path(marker.read_text(encoding="utf-8").strip())
    mmq = ggml / "src" / "ggml-cpu" / "amx" / "mmq.cpp"
    assert "bastion_vnni_small_m" in mmq.read_text(encoding="utf-8"), f"{mmq} is not patched"
    lib = Path(llama_cpp.__file__).parent / "lib"
    script = Path(__file__).parents[3] / "scripts" / "llama-cpp" / "amx_rows_check.cpp"
    exe = tmp_path / "amx_rows_check"
    built = subprocess.run(
        [cxx, "-std=c++17", "-O2", "-march=native", "-mamx-tile", "-mamx-int8",
         f"-I{mmq.parent}", f"-I{ggml / 'include'}", f"-I{ggml / 'src'}",
         f"-I{ggml / 'src' / 'ggml-cpu'}", str(script), "-o", str(exe), f"-L{lib}",
         "-lggml-cpu", "-lggml-base", f"-Wl,-rpath,{lib}"],
        capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, check=False)
    lines = ran.stdout.strip().splitlines()
    assert ran.returncode == 0 and lines[-1] == "0 mismatches", ran.stdout[-3000:] + ran.stderr
    checked = [ln for ln in lines if ln.endswith("bit-identical")]
    assert len(checked) == 35  # 3 types x 2 widths x 5 row counts, and Q4_K row by row x 5
    assert {ln.split()[0] for ln in checked} == {"q4_0", "q4_1", "q8_0", "q4_K"}

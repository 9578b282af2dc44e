"""bastion's two-row dot products on x86 (scripts/llama-cpp/two_row_dots.patch) in the real
llama.cpp build: the library's own kernels give, for two weight rows x two batch rows per call,
exactly the four results of four one-row calls; and in the real model a decode step of several
sequences on the dot products gives exactly the logits of llama.cpp's one row per call, with
every weight multiply counted on the two-row path (none with the knob at 1). The AVX2 path of
CPUs without AVX-512 is compiled from the patched source and checked on its own."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bastion.hardware.isa import current_isa
from bastion.llm import kernels
from bastion.llm.embedded import shipped_model_path

pytestmark = [pytest.mark.real_model]
llama_cpp = pytest.importorskip("llama_cpp")
DOTS_CHECK = Path(__file__).parents[3] / "scripts" / "llama-cpp" / "two_row_dots_check.c"

# in a child process: native code, where a crash fails one test, not the run. The library's
# own vec_dot for each type, called with nrc=2 and four times with nrc=1, on random rows.
_KERNELS = """
import ctypes, json, sys
import numpy as np
lib = sys.argv[1]
base = ctypes.CDLL(lib + "/libggml-base.so", mode=ctypes.RTLD_GLOBAL)
cpu = ctypes.CDLL(lib + "/libggml-cpu.so")
cpu.ggml_cpu_init()
class Traits(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]
cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(Traits)
cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
base.ggml_row_size.restype = ctypes.c_size_t
base.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
FROM = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                       ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
rng = np.random.default_rng(7)
out = {}
for name, wtype in (("q4_0", 2), ("q4_1", 3), ("q8_0", 8)):
    t = cpu.ggml_get_type_traits_cpu(wtype).contents
    vt = cpu.ggml_get_type_traits_cpu(t.vec_dot_type).contents
    quant_w, quant_a, dot = FROM(t.from_float), FROM(vt.from_float), DOT(t.vec_dot)
    same = checked = distinct = 0
    for k in (64, 576, 1536):
        rx, ry = base.ggml_row_size(wtype, k), base.ggml_row_size(t.vec_dot_type, k)
        for _ in range(40):
            w = rng.standard_normal((2, k), dtype=np.float32)
            a = rng.standard_normal((2, k), dtype=np.float32)
            wq, aq = np.zeros(2 * rx, np.uint8), np.zeros(2 * ry, np.uint8)
            for r in range(2):
                quant_w(w[r].ctypes.data, wq[r * rx:].ctypes.data, k)
                quant_a(a[r].ctypes.data, aq[r * ry:].ctypes.data, k)
            two = np.full(32, np.nan, np.float32)
            dot(k, two.ctypes.data, 16, wq.ctypes.data, rx, aq.ctypes.data, ry, 2)
            got = two[[0, 1, 16, 17]]  # x0.y0, x1.y0, x0.y1, x1.y1
            one = np.zeros(4, np.float32)
            for i, (x, y) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
                dot(k, one[i:].ctypes.data, 0, wq[x * rx:].ctypes.data, 0,
                    aq[y * ry:].ctypes.data, 0, 1)
            checked += 4
            same += int((got.view(np.uint32) == one.view(np.uint32)).sum())
            distinct += int(len(set(one.tolist())) == 4 and np.all(one != 0))
    out[name] = {"checked": checked, "same": same, "distinct": distinct}
print(json.dumps(out))
"""

# in a child process: the real model, batches of 2-4 rows on the dot products (sgemm's minimum
# above them), once with llama.cpp's one row per call and once with two, all logits compared
_MODEL = """
import json, sys
from pathlib import Path
import numpy as np
from llama_cpp import llama_cpp as C
from bastion.llm import kernels
from bastion.llm.embedded import load_llama
llm = load_llama(Path(sys.argv[1]), n_ctx=512, n_threads=int(sys.argv[2]),
                 n_threads_batch=int(sys.argv[2]), repack=False, n_seq=4)
ctx = llm._ctx.ctx
mem = C.llama_get_memory(ctx)
batch = C.llama_batch_init(8, 0, 4)
assert kernels.set_min_n(17)  # every batch here goes to the dot products
def logits(rows, dots):
    assert kernels.set_dot_rows(dots) and kernels.dot_rows() == dots
    before = kernels.dot2_steps()
    batch.n_tokens = rows
    for i in range(rows):  # one token of each of `rows` sequences, as a decode step
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = 1000 + 37 * i, 0, 1
        batch.seq_id[i][0], batch.logits[i] = i, True
    assert C.llama_decode(ctx, batch) == 0
    got = np.ctypeslib.as_array(C.llama_get_logits(ctx), shape=(rows * llm.n_vocab(),)).copy()
    C.llama_memory_clear(mem, True)
    return got, kernels.dot2_steps() - before
out = {}
for rows in (2, 3, 4):
    one, steps_one = logits(rows, 1)
    two, steps_two = logits(rows, 2)
    out[rows] = {"identical": bool(np.array_equal(one.view(np.uint32), two.view(np.uint32))),
                 "steps": [steps_one, steps_two], "scale": float(np.abs(one).max())}
print(json.dumps(out))
"""


def _needs_build() -> None:
    if not kernels.dot2_built():
        pytest.skip("this llama.cpp has no two-row dot products: they are built for x86 with "
                    "AVX2 (make install-dev builds bastion's; other CPUs keep llama.cpp's own)")


def test_the_two_row_kernels_give_exactly_the_one_row_kernels_results() -> None:
    _needs_build()
    lib = Path(llama_cpp.__file__).parent / "lib"
    done = subprocess.run([sys.executable, "-c", _KERNELS, str(lib)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(got) == {"q4_0", "q4_1", "q8_0"}
    for name, r in got.items():
        assert r["checked"] == 3 * 40 * 4
        assert r["same"] == r["checked"], f"{name}: {r['checked'] - r['same']} results differ"
        # (random rows: four different, non-zero results, so a result in the wrong place fails)
        assert r["distinct"] >= 110, f"{name}: the check's rows gave equal or zero results"


def test_the_avx2_path_without_avx512_is_bit_identical_too(tmp_path: Path) -> None:
    """CPUs with AVX2 but no AVX-512 (AMD Zen 2/3, Intel's client cores) run the patch's
    maddubs path, which a wheel built on an AVX-512 machine never runs: the patched quants.c
    compiled for AVX2 alone, checked here and on qemu's emulated Haswell (no AVX-512 at all)."""
    if platform.machine() != "x86_64":
        pytest.skip("the two-row dot products are x86 kernels")
    cc = shutil.which("gcc")
    assert cc, "no C compiler: make system-deps installs gcc"
    marker = Path(sys.prefix) / ".llama-cpp-src"
    assert marker.is_file(), "no record of the patched sources: make install-dev rebuilds them"
    ggml = Path(marker.read_text(encoding="utf-8").strip())
    cpu = ggml / "src" / "ggml-cpu"
    assert "bastion_dot2_q8_0_q8_0" in (cpu / "arch" / "x86" / "quants.c").read_text()
    lib = Path(llama_cpp.__file__).parent / "lib"
    exe = tmp_path / "two_row_dots_check"
    built = subprocess.run(
        [cc, "-std=c11", "-O2", "-mavx2", "-mfma", "-mf16c", "-mno-avx512f", "-mno-avxvnni",
         f"-I{cpu}", f"-I{ggml / 'src'}", f"-I{ggml / 'include'}", str(DOTS_CHECK), "-o",
         str(exe), f"-L{lib}", "-lggml-base", f"-Wl,-rpath,{lib}", "-lm"],
        capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    runs = [[str(exe)]] if "avx2" in (current_isa() or []) else []
    if shutil.which("qemu-x86_64"):  # scripts/system-deps.sh installs it
        runs.append(["qemu-x86_64", "-cpu", "Haswell-v4", str(exe)])
    if not runs:
        pytest.skip("this CPU has no AVX2 and no qemu-user is installed to emulate one")
    for argv in runs:
        ran = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        lines = ran.stdout.strip().splitlines()
        assert ran.returncode == 0 and lines[-1] == "0 mismatches", (argv, ran.stdout[-3000:])
        assert sum(ln.endswith(")") and "bit-identical" in ln for ln in lines) == 120
        assert not any("AVX-512" in ln for ln in lines)


def _model_run(model: Path, threads: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _MODEL, str(model), str(threads)],
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return got


@pytest.mark.parametrize("threads", [1, 2])
def test_a_step_of_several_sequences_gives_llama_cpps_exact_logits_with_two_rows_per_call(
        threads: int, q8_copy: Path) -> None:
    """The Q8_0 copy the worker loads on CPUs without AMX, and the shipped Q4_1 file."""
    _needs_build()
    for model in (q8_copy, shipped_model_path()):
        got = _model_run(model, threads)
        for rows in ("2", "4"):
            r = got[rows]
            assert r["identical"] and r["scale"] > 1, f"{model.name}, {rows} rows: {r}"
            # every weight multiply (7 per layer x 30, and the output head) took two rows per
            # call; none with llama.cpp's one row per call
            assert r["steps"][0] == 0 and r["steps"][1] >= 7 * 30 + 1, (model.name, rows, r)
        # an odd batch goes row by row (llama.cpp's rule for two-row kernels), still exact
        assert got["3"]["identical"] and got["3"]["steps"] == [0, 0], (model.name, got["3"])

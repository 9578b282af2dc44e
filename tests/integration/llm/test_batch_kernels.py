"""bastion's sgemm gate (and, on CPUs with AMX, its multi-row VNNI kernels) in the real llama.cpp
build, on the real model: it switches kernels, the worker measures once per CPU, build and
model, keeps the verdict and applies it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bastion.llm import kernels
from bastion.llm.worker import WorkerModel
from bastion.messages import ChatSettings, Message, TextDelta

pytestmark = [pytest.mark.real_model]
pytest.importorskip("llama_cpp")

# in a child process: tests load native code where a crash fails one test, not the run
_SWITCH = """
import json, sys
from pathlib import Path
from llama_cpp import llama_cpp as C
from bastion.llm import kernels
from bastion.llm.embedded import load_llama
path = sys.argv[2]  # "sgemm": weights in llama.cpp's layout; "amx": repacked for AMX
llm = load_llama(Path(sys.argv[1]), n_ctx=512, n_threads=1, n_threads_batch=1,
                 repack=path == "amx")
ctx, mem = llm._ctx.ctx, None
mem = C.llama_get_memory(ctx)
batch = C.llama_batch_init(8, 0, 1)
def logits(min_n):
    assert kernels.set_min_n(min_n, path)
    batch.n_tokens = 4
    for i in range(4):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = 1000 + 7 * i, i, 1
        batch.seq_id[i][0], batch.logits[i] = 0, True
    assert C.llama_decode(ctx, batch) == 0
    out = [C.llama_get_logits_ith(ctx, i)[j] for i in range(4) for j in range(0, 49152, 97)]
    C.llama_memory_seq_rm(mem, 0, 0, -1)
    return out
n0 = kernels.declined(path)
a = logits(2)
n1 = kernels.declined(path)
b = logits(5)
n2 = kernels.declined(path)
a2 = logits(2)
print(json.dumps({"same_path_same": a == a2, "declined": [n0, n1, n2, kernels.declined(path)],
                  "max_diff": max(abs(x - y) for x, y in zip(a, b)),
                  "scale": max(abs(x) for x in a), "now": kernels.current(path)}))
"""


# in a child process: the real batch engine on the real model, prompt steps on 1 thread and
# generation steps on 2, recording the library's minimum as each decode starts
_STEPS = """
import json, sys, threading
from pathlib import Path
from llama_cpp import llama_cpp as C
from bastion.llm import kernels
from bastion.llm._batch import BatchEngine
from bastion.llm.embedded import _Engine, load_llama
llm = load_llama(Path(sys.argv[1]), n_ctx=512, n_threads=1, repack=False, n_seq=1)
choice = kernels.Choice({1: 9, 2: 3}, "planted")
applied, seen = [], []
decode = C.llama_decode
def watched(ctx, batch):
    seen.append(kernels.current())
    return decode(ctx, batch)
C.llama_decode = watched
def on_threads(n):
    applied.append(n)
    choice.apply(n)
batch = BatchEngine(_Engine(llm, None, None), 1, lambda m: None,
                    lambda prompt: 1 if prompt else 2, on_threads=on_threads)
batch.submit({"op": "gen", "id": 1, "seq": 0, "prefix": "", "schema": None,
              "temperature": 0.0, "seed": None, "stop": [], "max_tokens": 4,
              "messages": [{"role": "user", "content": "Name a colour."}]})
runner = threading.Thread(target=batch.run)
runner.start()
batch.stop()
runner.join(120)
print(json.dumps({"applied": applied, "seen": seen}))
"""


def test_the_gate_moves_small_batches_between_kernels_with_close_results(q8_copy: Path) -> None:
    """The built library has the gate: with the minimum at 5, the multiplies of a 4-row batch
    go to ggml's dot products (the gate counts each one it declines), and with llama.cpp's 2
    to sgemm again (none declined); both kernels give close logits (kernels.AGREE)."""
    assert kernels.current() is not None, "this llama-cpp-python lacks bastion's gate: make install"
    got = _switch(q8_copy, "sgemm")
    # every weight multiply of the 30 layers (7 each) and the output head went to the dot products
    assert got["moved"] >= 7 * 30 + 1, f"the gate declined only {got['moved']} multiplies at 5"


def test_on_amx_small_batches_move_from_the_tiles_to_the_vnni_rows_with_close_results() -> None:
    """On a CPU with AMX, weights repacked for it: with the minimum at 5, every repacked weight
    multiply of a 4-row batch runs on bastion's multi-row VNNI kernels (each counted), and with
    llama.cpp's 2 on the AMX tiles again; both give close logits (kernels.AGREE). (Without AMX
    the kernels themselves are checked bit for bit against llama.cpp's one-row kernel:
    tests/integration/llm/test_amx_rows.py.)"""
    from bastion.llm.embedded import shipped_model_path
    from bastion.llm.repack import has_amx

    if not has_amx():
        pytest.skip("this CPU has no AMX: the AMX tiles cannot run here")
    assert kernels.amx_rows_built(), "this llama.cpp lacks bastion's AMX rows: make install"
    got = _switch(shipped_model_path(), "amx")
    assert got["moved"] >= 7 * 30, f"only {got['moved']} multiplies took the VNNI rows at 5"


def _switch(model: Path, path: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _SWITCH, str(model), path], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["same_path_same"]
    n0, n1, n2, n3 = got["declined"]
    assert n1 == n0 and n3 == n2, "a batch left the batched kernel at llama.cpp's default minimum"
    assert got["max_diff"] < kernels.AGREE * got["scale"]
    assert got["now"] == 2  # (the last call set llama.cpp's default back)
    got["moved"] = n2 - n1
    return got


async def _answer(model: WorkerModel) -> str:
    out = []
    async for ev in model.chat([Message("user", "Name a colour.")],
                               settings=ChatSettings(max_tokens=4)):
        if isinstance(ev, TextDelta):
            out.append(ev.text)
    return "".join(out)


def _workers_info(workers: int = 1) -> list[dict[str, Any]]:
    """Start ``workers`` workers on the shipped model, answer on each; return their ready lines."""
    model = WorkerModel.load(n_ctx=512, slots=workers, workers=workers)

    async def each() -> None:
        answers = await asyncio.gather(*(_answer(model) for _ in range(workers)))
        assert all(answers)

    try:
        asyncio.run(each())
        return model.worker_info()
    finally:
        model.close()


def _measured_info(workers: int = 1, tries: int = 3) -> list[dict[str, Any]]:
    """:func:`_workers_info` where the workers' timings were believed: a worker that found the
    CPU busy while timing (another test's process on the cores) keeps nothing and says so."""
    for _ in range(tries):
        infos = _workers_info(workers)
        if not any("CPU was busy" in info["kernels"] for info in infos):
            return infos
    pytest.skip(f"the CPU stayed busy while the kernels were timed ({tries} starts); as designed "
                "nothing was kept (the rule itself: tests/unit/llm/test_kernels.py)")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private model cache of this test's own, and no fixed minimum: the worker measures."""
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("BASTION_MODEL_CACHE", str(folder))
    monkeypatch.delenv(kernels.ENV, raising=False)
    return folder


def test_the_worker_measures_once_keeps_the_verdict_and_applies_it(cache: Path) -> None:
    (info,) = _measured_info()
    if "no multi-row VNNI" in info["kernels"]:
        assert not (cache / kernels.VERDICTS).exists() and info["batch_min_n"] == {"1": 2}
        return  # not measured: AMX kernels in a build without bastion's rows for them
    verdicts = json.loads((cache / kernels.VERDICTS).read_text())
    ((key, kept),) = verdicts.items()
    assert set(kept["timings"]) >= {"1"}  # one thread, and the most a step of it gets
    for timings in kept["timings"].values():
        assert sorted(int(n) for n in timings) == list(kernels.SIZES)
        assert all(s > 0 and d > 0 for s, d in timings.values())
    assert info["batch_min_n"] == kept["min_n"] == {
        t: kernels.decide({int(n): tuple(v) for n, v in tm.items()})
        for t, tm in kept["timings"].items()}
    short = {"sgemm": "sgemm/dots ms", "amx": "tiles/vnni ms"}[info["batch_kernel"]]
    assert short in info["kernels"]
    # the next worker takes the kept verdict instead of measuring: plant another one
    kept["min_n"] = {t: 7 for t in kept["min_n"]}
    (cache / kernels.VERDICTS).write_text(json.dumps({key: kept}))
    (again,) = _workers_info()
    assert set(again["batch_min_n"].values()) == {7} and "below 7 rows" in again["kernels"]


def test_a_fixed_minimum_in_the_environment_is_applied_without_measuring(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.ENV, "6")
    (info,) = _workers_info()
    assert info["batch_min_n"] == {"1": 6} and kernels.ENV in info["kernels"]
    assert not (cache / kernels.VERDICTS).exists()
    # the two-row dot products: the build's default, and one row per call for an A/B comparison
    assert info["dot_rows"] == (2 if kernels.dot2_built() else 1)
    monkeypatch.setenv(kernels.DOT_ENV, "1")
    (info,) = _workers_info()
    assert info["dot_rows"] == 1


def test_a_pools_workers_measure_one_at_a_time_and_share_the_verdict(cache: Path) -> None:
    """Two workers starting together on shared cores must not time each other's measurement:
    the second waits for the first's lock, then takes its verdict (the same figures)."""
    infos = _measured_info(2)
    assert len(infos) == 2
    assert infos[0]["kernels"] == infos[1]["kernels"]  # measured once: the same timings
    if "no multi-row VNNI" not in infos[0]["kernels"]:
        assert len(json.loads((cache / kernels.VERDICTS).read_text())) == 1
    assert (cache / "sgemm-probe.lock").stat().st_mode & 0o077 == 0


def test_the_batch_engine_sets_each_steps_minimum_when_its_thread_count_changes(
        q8_copy: Path) -> None:
    """A verdict per thread count is only right if every step runs with its own: the real
    batch engine calls ``on_threads`` once per change, before the step's decode (a prompt step
    on 1 thread runs at that count's minimum, the generation steps on 2 threads at theirs)."""
    done = subprocess.run([sys.executable, "-c", _STEPS, str(q8_copy)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["applied"] == [1, 2]  # one call per change, none for a repeated count
    assert got["seen"][0] == 9 and len(got["seen"]) >= 3  # the prompt, then tokens
    assert set(got["seen"][1:]) == {3}

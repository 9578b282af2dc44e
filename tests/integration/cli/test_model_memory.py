"""The embedded model's memory, attacked with settings that cannot fit and with a real OOM kill.

Before the plan (:mod:`bastion.llm.footprint`) a context the box could not hold got the worker
killed by the kernel (``signal 9 ... fix: retry the request``: a retry did the same, and
``doctor``'s smoke test, which loads a small context, said OK), and ``model.n_ctx`` above the
model's trained context allocated a KV cache the model cannot use. The limits here are real:
a memory cgroup made for the test (the way a container or a systemd unit limits bastion).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration._cgroup import memory_cgroup
from tests.integration.cli.conftest import ROOT, bastion, cli_env

pytestmark = [pytest.mark.real_model]
pytest.importorskip("llama_cpp")


def _in(group: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = f'echo $$ > {group}/cgroup.procs && exec "$@"'
    return subprocess.run(["sh", "-c", script, "sh", sys.executable, "-m", "bastion", *args],
                          env={**cli_env(home), **env}, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert len(lines) == 1, done.stdout + done.stderr
    return lines[0]


def test_a_context_that_cannot_fit_is_refused_before_any_worker_is_killed(
        bastion_home: Path) -> None:
    assert bastion(bastion_home, "init", "--yes").returncode == 0
    for key, value in (("model.n_ctx", "8192"), ("model.slots", "64")):
        assert bastion(bastion_home, "config", "set", key, value).returncode == 0
    with memory_cgroup(1 << 30) as group:  # 64 x 8192 tokens of KV cache: 11 GiB
        asked = _in(group, bastion_home, "ask", "What is 2+2?")
        doctor = _in(group, bastion_home, "doctor")
    assert asked.returncode == 1
    line = _one_line(asked)
    assert "the local model needs 11." in line and "KV cache 11.2 GiB" in line, line
    assert "within this cgroup's 1.0 GiB limit" in line, line
    assert "bastion config set model.slots 2" in line, line  # what fits, as a command
    assert "signal 9" not in line
    row = " ".join(next(ln for ln in doctor.stdout.splitlines() if "model memory" in ln).split())
    assert "FAIL" in row and "needs 11." in row, doctor.stdout


def test_an_out_of_memory_kill_is_named_as_such(bastion_home: Path) -> None:
    """A worker the kernel kills for memory is told apart from a crash, with the fix."""
    assert bastion(bastion_home, "init", "--yes").returncode == 0
    assert bastion(bastion_home, "config", "set", "model.slots", "1").returncode == 0
    with memory_cgroup(1 << 30) as group:  # the model fits; the failpoint then grows past it
        asked = _in(group, bastion_home, "ask", "What is 2+2?",
                    BASTION_TEST_WORKER_FAULT="after-load-memory")
    line = _one_line(asked)
    assert asked.returncode == 1
    assert "killed for lack of memory (signal 9, SIGKILL" in line, line
    assert "out-of-memory killer" in line and "model.n_ctx" in line, line


def test_a_context_above_the_trained_one_is_lowered_to_it() -> None:
    """model.n_ctx 65536 on a model trained on 8192: the worker gets 8192 and answers."""
    from bastion.llm.worker import WorkerModel

    async def run() -> tuple[str, int, tuple[str, ...]]:
        model = WorkerModel.load(n_ctx=65536, slots=1, workers=1)
        try:
            text, _ = await model.complete([{"role": "user", "content": "What is 2+2?"}],
                                           schema=None, max_tokens=24)
            assert model.memory is not None
            notes = tuple(n.text for n in model.memory.notes)
            return text, int(model.worker_info()[0]["n_ctx"]), notes
        finally:
            await model.aclose()

    text, n_ctx, notes = asyncio.run(run())
    assert n_ctx == 8192
    assert any("above the 8192 tokens this model was trained on" in n for n in notes), notes
    assert "4" in text


def test_a_context_llama_cpp_cannot_allocate_names_the_context_not_the_file() -> None:
    """Where the plan cannot see the bound (an address-space limit), llama.cpp's own failure
    to make the context names the context and its settings; it used to say re-download."""
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "from bastion.errors import ModelError\n"
        "from bastion.llm.embedded import load_llama, shipped_model_path\n"
        "try:\n"
        "    load_llama(shipped_model_path(), n_ctx=8192 * 64, n_threads=1, n_seq=64)\n"
        "except ModelError as exc:\n"
        "    print(exc.message, '|', exc.fix)\n")
    done = subprocess.run([sys.executable, "-c", script], env=cli_env(Path("/nonexistent")),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    said = done.stdout.strip()
    assert "64 conversation(s) at once x 8192 tokens (Failed to create llama_context)" in said, \
        done.stdout + done.stderr
    assert "lower model.n_ctx or model.slots" in said and "re-download" not in said, said


def test_gpu_layers_on_a_build_without_a_gpu_backend_are_said_to_run_on_the_cpu(
        bastion_home: Path) -> None:
    """model.n_gpu_layers on a CPU-only llama.cpp (what `make install` builds): llama.cpp
    ignores it without a word; doctor says so with the rebuild, and the model is readied and
    planned as the CPU model it is (its Q4_1 weights converted, its KV cache counted)."""
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama.cpp build has a GPU backend: n_gpu_layers takes effect")
    assert bastion(bastion_home, "init", "--yes").returncode == 0
    assert bastion(bastion_home, "config", "set", "model.n_gpu_layers", "99").returncode == 0
    doctor = subprocess.run([sys.executable, "-m", "bastion", "doctor"], capture_output=True,
                            env={**cli_env(bastion_home), "COLUMNS": "1000"},  # rows unwrapped
                            text=True, timeout=300, cwd=ROOT)
    out = " ".join(doctor.stdout.split())
    assert "model.n_gpu_layers 99 has no effect: this llama.cpp build has no GPU backend" in out
    assert "CMAKE_ARGS=-DGGML_CUDA=on make install" in out, doctor.stdout
    assert "KV cache" in out  # planned as a CPU model, not skipped as offloaded
    assert "q4_1 weights converted once to q8_0" in out  # readied as a CPU model too
    asked = bastion(bastion_home, "ask", "What is 2+2?", timeout=300)
    assert asked.returncode == 0 and "4" in asked.stdout, asked.stderr


def test_init_on_a_gpu_box_with_a_cpu_only_build_recommends_for_the_cpu(
        bastion_home: Path, tmp_path: Path) -> None:
    """A GPU the installed llama.cpp cannot use does not count: init used to size the model
    for its memory and offload every layer, which llama.cpp then ran on the CPU."""
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama.cpp build has a GPU backend")
    fake = tmp_path / "bin"  # an NVIDIA driver's tool, as `bastion init` queries it
    fake.mkdir()
    (fake / "nvidia-smi").write_text(
        "#!/bin/sh\necho 'NVIDIA GeForce RTX 4070, 12282, 11900, 550.54.14'\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = {**cli_env(bastion_home), "PATH": f"{fake}:{os.environ['PATH']}", "COLUMNS": "1000"}
    done = subprocess.run([sys.executable, "-m", "bastion", "init", "--yes"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    shown = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0, shown
    assert "NVIDIA GeForce RTX 4070: 12.0 GiB" in shown  # the GPU was seen
    assert "GPU offload │ none: this llama.cpp build has no GPU backend" in shown, shown
    assert "CMAKE_ARGS=-DGGML_CUDA=on make install" in shown
    assert "CPU only with" in shown  # recommended for the CPU, saying why
    assert "RTX 4070 found, but the installed llama.cpp has no GPU backend" in shown
    config = (bastion_home / "bastion.yaml").read_text()
    assert "n_gpu_layers: 0" in config and "accelerator: cpu" in config, config


@pytest.mark.parametrize("isolation", ["worker", "in_process"])
def test_a_setting_that_does_not_take_effect_is_said_on_every_run(
        bastion_home: Path, isolation: str) -> None:
    """model.n_ctx above the trained context: `ask` says it on stderr with the fix; the answer
    on stdout is untouched (scripts read stdout)."""
    assert bastion(bastion_home, "init", "--yes").returncode == 0
    for key, value in (("model.n_ctx", "32768"), ("model.isolation", isolation)):
        assert bastion(bastion_home, "config", "set", key, value).returncode == 0
    asked = bastion(bastion_home, "ask", "What is 2+2?", timeout=300)
    assert asked.returncode == 0, asked.stderr
    assert "note: a 32768-token context is above the 8192 tokens this model was trained on: " \
        "using 8192 (fix: `bastion config set model.n_ctx 8192`)" in asked.stderr, asked.stderr
    assert "note:" not in asked.stdout and "4" in asked.stdout

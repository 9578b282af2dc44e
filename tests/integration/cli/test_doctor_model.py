"""``bastion doctor`` loads the real model in a child process and names the fix for a crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.llm.embedded import repack_default
from bastion.llm.repack import amx_kernels
from tests.integration.cli.conftest import ROOT, cli_env

pytestmark = [pytest.mark.real_model]
pytest.importorskip("llama_cpp")

# llama.cpp's AMX kernels run here (an AMX CPU, a build whose AMX kernels pass the probe)
AMX_KERNELS = amx_kernels(repack_default())


def _doctor(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", "doctor"],
                          env={**cli_env(home), **env}, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def _init(home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bastion", "init", "--yes"], env=cli_env(home),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = done.stdout + done.stderr
    assert "llama.cpp" in shown and "weight repacking" in shown
    assert "converted once to Q8_0" in shown  # the choice for Q4_1/Q5_1 weights
    if AMX_KERNELS:
        assert "llama.cpp's AMX kernels batch them" in shown


def test_doctor_smoke_tests_the_model_in_a_child(bastion_home: Path) -> None:
    _init(bastion_home)
    ok = _doctor(bastion_home)
    line = next(ln for ln in ok.stdout.splitlines() if "model smoke test" in ln)
    assert "OK" in line and "worker process" in line, ok.stdout
    if AMX_KERNELS:  # the shipped model: its Q4_1 weights batch on llama.cpp's AMX kernels
        assert "q4_1 weights loaded as they are (llama.cpp's AMX kernels" in line, ok.stdout
    else:  # elsewhere converted to Q8_0, which llama.cpp batches
        assert "q4_1 weights converted once to q8_0" in line, ok.stdout


def test_doctor_reports_a_model_crash_with_the_fix(bastion_home: Path) -> None:
    _init(bastion_home)
    crashed = _doctor(bastion_home, BASTION_TEST_WORKER_FAULT="after-load")
    out = " ".join(crashed.stdout.split())
    assert crashed.returncode == 1, crashed.stdout
    assert "model smoke test" in out and "signal 11, SIGSEGV" in out
    assert "model.repack off" in out
    assert "Traceback" not in crashed.stdout + crashed.stderr
    assert os.path.isdir(bastion_home)


def test_doctor_names_the_rebuild_for_an_illegal_instruction(bastion_home: Path) -> None:
    """SIGILL: llama.cpp uses an instruction this CPU lacks (a build from another CPU without
    bastion's record of it): the fix is a rebuild, not the repacking switch."""
    _init(bastion_home)
    crashed = _doctor(bastion_home, BASTION_TEST_WORKER_FAULT="after-load-sigill")
    out = " ".join(crashed.stdout.split())
    assert crashed.returncode == 1, crashed.stdout
    assert "model smoke test" in out and "signal 4, SIGILL" in out
    assert "built on another CPU" in out and "make install" in out
    assert "model.repack off" not in out
    assert "Traceback" not in crashed.stdout + crashed.stderr

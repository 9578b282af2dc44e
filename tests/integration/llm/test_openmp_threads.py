"""Loading a model leaves no OpenMP thread pool behind on the loading thread (real llama.cpp).

With llama.cpp's AMX kernels, loading repacks the weights in an OpenMP parallel loop, and the
loading thread keeps that loop's pool of idle threads. Decoding on any other thread (a request
thread, a server's thread pool) then made GNU OpenMP count more threads than cores and stop
spinning at its barriers: 2 threads decoded 28 tokens/s instead of 136-164 on an AMX Xeon.
``load_llama`` frees the pool (``release_openmp_threads``); this counts the process's threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.llm.embedded import repack_default
from bastion.llm.repack import amx_kernels

pytestmark = [pytest.mark.real_model]
pytest.importorskip("llama_cpp")

SRC = str(Path(__file__).resolve().parents[3] / "src")

_COUNT = """
import os, sys
import llama_cpp
from bastion.llm import embedded
from bastion.llm.embedded import load_llama, shipped_model_path
if sys.argv[1] == "unreleased":
    embedded.release_openmp_threads = lambda: None
before = len(os.listdir("/proc/self/task"))
llm = load_llama(shipped_model_path(), n_ctx=256, n_threads=2, repack=True)
print(before, len(os.listdir("/proc/self/task")))
"""


# what `bastion node serve` runs: llama_cpp.server builds its Llama itself, under server_main's
# hooks (then serves from a thread pool: the case the release is for)
_SERVER = """
import os, sys
import llama_cpp
from bastion.llm import embedded, server_main
from bastion.llm.embedded import shipped_model_path
if sys.argv[1] == "unreleased":
    embedded.release_openmp_threads = lambda: None
server_main.install_hooks()
before = len(os.listdir("/proc/self/task"))
llm = llama_cpp.Llama(model_path=str(shipped_model_path()), n_ctx=256, n_threads=2,
                      verbose=False)
print(before, len(os.listdir("/proc/self/task")))
"""


def _threads(mode: str, script: str = _COUNT) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                          timeout=300, check=True, env={**os.environ, "PYTHONPATH": SRC})
    before, after = done.stdout.split()[-2:]
    return int(before), int(after)


@pytest.mark.skipif(not amx_kernels(repack_default()) or (os.cpu_count() or 1) < 2,
                    reason="llama.cpp's AMX kernels do not run here (or one CPU): loading "
                           "starts no OpenMP pool to leave behind")
@pytest.mark.parametrize("script", [_COUNT, _SERVER], ids=["load_llama", "server_main"])
def test_loading_leaves_no_openmp_pool_behind(script: str) -> None:
    before, after = _threads("released", script)
    assert after == before, (before, after)
    before, after = _threads("unreleased", script)  # what the release is for: the pool stays
    assert after > before, (before, after)

"""The shipped Q4_1 model converted to Q8_0 by llama.cpp's quantizer: the file, the cache, the
answers (real llama.cpp, real worker processes)."""

from __future__ import annotations

import json
import os

import pytest

from bastion.llm.convert import cache_dir, source_sha256
from bastion.llm.embedded import file_type, load_llama, repack_verdict, shipped_model_path
from bastion.llm.repack import has_amx
from bastion.llm.store import sha256_file
from bastion.llm.worker import WorkerModel

pytestmark = [pytest.mark.real_model]
pytest.importorskip("llama_cpp")

# short factual prompts: Q4_1 and its Q8_0 conversion answered each identically (greedy) here;
# on longer free text the two part after ~20 tokens where two next tokens are nearly tied
PROMPTS = ["What is the capital of France? Answer in one sentence.", "What is 12 times 12?",
           "How many days are in a leap year?", "What is a prime number?"]


async def _answers(model: WorkerModel) -> list[str]:
    from bastion.llm._constrained import plain_messages
    from bastion.messages import Message

    out = []
    for p in PROMPTS:
        async with model.lease() as lease:
            text, _ = await lease.complete(plain_messages([Message("user", p)]), schema=None,
                                           max_tokens=16)
        out.append(text)
    return out


async def test_the_shipped_model_loads_from_its_q8_0_copy_and_answers_the_same() -> None:
    # llama.cpp's plain CPU kernels (no repacking): the ones that cannot batch Q4_1 (on an AMX
    # CPU with repacking the AMX kernels batch it, and it stays Q4_1: the test below)
    converted = WorkerModel.load(n_ctx=512, slots=1, repack=False)  # model.convert: auto
    as_is = WorkerModel.load(n_ctx=512, slots=1, convert="off", repack=False)
    try:
        choice = converted.weights
        assert choice is not None and choice.converted and choice.weights == "q4_1"
        assert choice.path.parent == cache_dir()
        assert choice.path.name == f"{source_sha256(shipped_model_path())}.q8_0.gguf"
        assert (choice.path.stat().st_mode & 0o777) == 0o600
        meta = json.loads(choice.path.with_suffix(".json").read_text())
        assert meta["sha256"] == sha256_file(choice.path)  # the sidecar names these bytes
        assert file_type(load_llama(choice.path, n_ctx=256, n_threads=1, vocab_only=True)) == 7
        assert as_is.weights is not None and not as_is.weights.converted
        assert as_is.weights.path == shipped_model_path()
        a, b = await _answers(as_is), await _answers(converted)
        assert "Paris" in b[0]
        assert sum(x == y for x, y in zip(a, b, strict=True)) >= 3, (a, b)
        mtime = choice.path.stat().st_mtime_ns
        again = WorkerModel.load(n_ctx=512, slots=1, repack=False)  # the cached copy, as is
        assert again.weights is not None and again.weights.path == choice.path
        assert choice.path.stat().st_mtime_ns == mtime
        again.close()
        assert os.access(choice.path, os.R_OK)
    finally:
        await converted.aclose()
        await as_is.aclose()


AMX = has_amx()


@pytest.mark.skipif(not AMX, reason="this CPU has no AMX: its kernels cannot batch Q4_1 here")
async def test_on_amx_kernels_the_shipped_q4_1_file_is_loaded_as_it_is() -> None:
    if not repack_verdict().repack:
        pytest.skip(f"this llama.cpp build's AMX kernels crash: {repack_verdict().why}")
    model = WorkerModel.load(n_ctx=512, slots=1)  # the defaults: repacking on, convert auto
    try:
        choice = model.weights
        assert choice is not None and not choice.converted
        assert choice.path == shipped_model_path() and "AMX kernels batch" in choice.reason
        assert "Paris" in (await _answers(model))[0]
        assert model.worker_info()[0]["repack"] is True
    finally:
        await model.aclose()

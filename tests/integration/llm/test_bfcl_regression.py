"""A fixed handful of BFCL development-half questions through bastion's real tool-calling path.

The full benchmark is ``bench/bfcl.py`` (not a test). This catches regressions in the
embedded backend's choose / fill / answer protocol. Measured when set: 11/12 (simple_python
4/4, multiple 4/4, irrelevance 3/4). The floor leaves one question of slack overall, since
llama.cpp's float results (and so greedy ties) vary a little with CPU and thread count.
"""

from __future__ import annotations

from typing import Any

import pytest

from bastion.config.model import AgentConfig
from bastion.llm.embedded import EmbeddedModel

pytest.importorskip("bfcl_eval")  # installed --no-deps by scripts/test-assets.sh
from bench.bfcl import load_category, load_checker, run_bastion  # noqa: E402

pytestmark = pytest.mark.real_model

# First ids of each category's development half (even ids; see bench/bfcl_split.json).
QUESTIONS = {
    "simple_python": ["simple_python_0", "simple_python_2", "simple_python_4", "simple_python_6"],
    "multiple": ["multiple_0", "multiple_2", "multiple_4", "multiple_6"],
    "irrelevance": ["irrelevance_0", "irrelevance_2", "irrelevance_4", "irrelevance_6"],
}
FLOOR = {"simple_python": 3, "multiple": 3, "irrelevance": 3}  # per category, measured 4/4/3
TOTAL_FLOOR = 10  # measured 11 of 12


async def test_bfcl_fixed_questions_floor(shipped_llama: Any) -> None:
    model = EmbeddedModel(shipped_llama)
    check = load_checker()
    system = AgentConfig().system_prompt
    scores: dict[str, int] = {}
    details = []
    for cat, ids in QUESTIONS.items():
        by_id = {q["id"]: q for q in load_category(cat)}
        scores[cat] = 0
        for qid in ids:
            q = by_id[qid]
            out = await run_bastion(model, q, system)
            ok = check(cat, q["function"], out, q["answer"])
            scores[cat] += ok
            details.append(f"{qid}: {'ok' if ok else 'FAIL'} {out}")
    report = f"{scores}\n" + "\n".join(details)
    assert sum(scores.values()) >= TOTAL_FLOOR, report
    for cat, floor in FLOOR.items():
        assert scores[cat] >= floor, report

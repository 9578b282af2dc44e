"""The complexity classifier against a labelled prompt set."""

from __future__ import annotations

import pytest

from bastion.cluster.classifier import classify, estimate_prompt_tokens
from bastion.messages import Message, ToolSpec

LABELLED: list[tuple[str, str]] = [
    ("hi", "simple"),
    ("thanks!", "simple"),
    ("Good morning", "simple"),
    ("What is the capital of France?", "simple"),
    ("Translate 'cat' into German.", "simple"),
    ("What time zone is Tokyo in?", "simple"),
    ("List three colours.", "simple"),
    ("Who wrote Hamlet?", "simple"),
    ("Summarise this sentence: the meeting moved to Friday.", "simple"),
    ("Convert 5 km to miles.", "simple"),
    ("Is 17 a prime number?", "simple"),
    ("Spell 'necessary'.", "simple"),
    ("Compare Python and Go for writing CLI tools.", "moderate"),
    ("Explain why the sky is blue in detail.", "moderate"),
    ("Why does this fail?\n```python\nprint(1/0)\n```", "moderate"),
    ("Solve 3x + 5 = 20 step by step.", "moderate"),
    ("What are the trade-offs between SQLite and Postgres for a small app?", "moderate"),
    ("Design a REST API for a todo list app.", "moderate"),
    ("Debug this: Traceback (most recent call last): KeyError 'id'", "moderate"),
    ("Analyze the pros and cons of remote work.", "moderate"),
    (
        "Design a distributed rate limiter for a multi-region API. Compare token bucket and "
        "sliding window algorithms, analyze the consistency trade-offs, and explain why your "
        "design handles clock skew. Give pseudocode.\n```\nclass Limiter: ...\n```",
        "complex",
    ),
    (
        "Prove that the sum of the first n odd numbers is n^2, derive the formula step by step, "
        "and then analyze the complexity of computing it with a loop versus the closed form.",
        "complex",
    ),
    (
        "Refactor this module for testability and optimize its hot loop; explain why each "
        "change helps:\n```python\ndef run(xs):\n    out = []\n    for x in xs:\n        "
        "out.append(x * 2)\n    return out\n```",
        "complex",
    ),
    (
        "1. Evaluate our caching strategy.\n2. Compare Redis and Memcached.\n3. Design an "
        "eviction policy.\n4. Analyze the failure modes in detail.",
        "complex",
    ),
]


@pytest.mark.parametrize(("prompt", "label"), LABELLED)
def test_labelled_prompts(prompt: str, label: str) -> None:
    got = classify([Message("user", prompt)])
    assert got.complexity == label, (prompt, got.score, got.features)


def test_accuracy_over_the_set_and_tiers() -> None:
    hits = sum(classify([Message("user", p)]).complexity == lab for p, lab in LABELLED)
    assert hits == len(LABELLED)
    assert classify([Message("user", "hi")]).tier == "small"
    assert classify([Message("user", LABELLED[-1][0])]).tier == "large"


def test_context_features_tools_and_depth() -> None:
    tools = [ToolSpec(f"t{i}", "d", {"type": "object"}) for i in range(5)]
    history = [Message("user" if i % 2 == 0 else "assistant", "ok") for i in range(12)]
    plain = classify([Message("user", "Compare the two files.")])
    rich = classify([*history, Message("user", "Compare the two files.")], tools)
    assert rich.score == plain.score + 2
    assert rich.features["tools"] == 1 and rich.features["depth"] == 1
    assert rich.prompt_tokens > plain.prompt_tokens


def test_prompt_estimate_grows_with_text() -> None:
    small = estimate_prompt_tokens([Message("user", "a" * 40)])
    big = estimate_prompt_tokens([Message("user", "a" * 4000)])
    assert 10 <= small < 30 and 990 <= big <= 1100

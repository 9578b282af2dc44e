"""Fast local complexity classifier: which tier should answer a request.

No model call, no network: a handful of cheap text features, each with a documented weight,
summed into a score (microseconds per request). The features, computed on the latest user
message unless noted:

========================  ======  =========================================================
feature                   weight  why
========================  ======  =========================================================
length (words)            0-3     long asks carry more constraints (1 per 60 words, max 3)
code                      2       fenced code, stack traces or code-like lines
reasoning verbs           2, +1   prove, derive, analyse, design, compare, optimise, ...: 2 for the
                                  first, 1 per further distinct verb (max 4)
step-by-step request      2       "step by step", "explain why", "in detail", "pros and cons"
math                      1       equations, operators between numbers, integrals, matrices
multiple parts            1       several questions or an enumerated list of asks
tools offered             1       the model must decide about tool calls (only if > 3 tools)
conversation depth        1       more than 8 earlier messages to keep consistent with
small talk                -2      greetings/thanks/yes/no: always the smallest tier
========================  ======  =========================================================

Score < 2 -> ``simple`` (tier small), 2-4 -> ``moderate`` (medium), >= 5 -> ``complex``
(large). The context need (estimated prompt tokens + ``max_tokens``) is a hard filter
applied by the router: a node whose ``max_context`` is smaller is never chosen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from bastion.messages import Message, ToolSpec

Complexity = Literal["simple", "moderate", "complex"]
TIER_OF: dict[Complexity, Literal["small", "medium", "large"]] = {
    "simple": "small",
    "moderate": "medium",
    "complex": "large",
}

_CODE = re.compile(
    r"```|^\s*(def |class |import |from \S+ import|#include|function |public |SELECT |"
    r"Traceback \(most recent call last\)|\s{4}\S.*[;{}]\s*$)",
    re.MULTILINE | re.IGNORECASE,
)
_REASONING = re.compile(
    r"\b(prove|proof|derive|derivation|analy[sz]e|analysis|design|architect\w*|compare|"
    r"contrast|optimi[sz]e|refactor|debug|evaluate|critique|trade-?offs?|implications?|"
    r"algorithm|complexity|formali[sz]e|strateg\w+|plan out|reason about)\b",
    re.IGNORECASE,
)
_STEPWISE = re.compile(
    r"step[- ]by[- ]step|explain why|in detail|thoroughly|pros and cons|justify|edge cases",
    re.IGNORECASE,
)
_MATH = re.compile(
    r"\d\s*[-+*/^=]\s*\d|\b(integral|derivative|equation|matrix|eigen\w*|probability|"
    r"theorem|lemma|polynomial|logarithm)\b|[∑∫√≤≥]",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"^\s*(\d+[.)]|[-*•])\s+\S", re.MULTILINE)
_SMALL_TALK = re.compile(
    r"^\s*(hi|hello|hey|thanks|thank you|ok(ay)?|yes|no|good (morning|night|evening)|bye|"
    r"how are you)\b[\s!.?]*\S{0,20}[\s!.?]*$",
    re.IGNORECASE,
)


def estimate_tokens(text: str) -> int:
    """Rough token count (~4 characters per token for English and code)."""
    return (len(text) + 3) // 4


def estimate_prompt_tokens(messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> int:
    """Estimate the prompt size including chat framing and tool schemas."""
    total = 0
    for m in messages:
        total += estimate_tokens(m.content) + 4
        for c in m.tool_calls:
            total += estimate_tokens(c.name + c.arguments_json()) + 4
    for t in tools:
        total += estimate_tokens(t.name + t.description + str(t.parameters)) + 8
    return total + 2


@dataclass(slots=True)
class Classification:
    """The verdict for one request."""

    complexity: Complexity
    score: int
    prompt_tokens: int
    features: dict[str, int] = field(default_factory=dict)

    @property
    def tier(self) -> Literal["small", "medium", "large"]:
        """The tier this complexity maps to."""
        return TIER_OF[self.complexity]


def classify(messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> Classification:
    """Score a request's complexity from cheap text features (see the module docstring)."""
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    feats: dict[str, int] = {}
    words = len(last.split())
    feats["length"] = min(3, words // 60)
    if _CODE.search(last):
        feats["code"] = 2
    reasoning = len({m.group(0).lower() for m in _REASONING.finditer(last)})
    if reasoning:
        feats["reasoning"] = min(4, reasoning + 1)
    if _STEPWISE.search(last):
        feats["stepwise"] = 2
    if _MATH.search(last):
        feats["math"] = 1
    if last.count("?") >= 2 or len(_LIST_ITEM.findall(last)) >= 3:
        feats["multipart"] = 1
    if len(tools) > 3:
        feats["tools"] = 1
    earlier = sum(1 for m in messages if m.role in ("user", "assistant")) - 1
    if earlier > 8:
        feats["depth"] = 1
    if words <= 8 and _SMALL_TALK.match(last):
        feats["small_talk"] = -2
    score = sum(feats.values())
    complexity: Complexity = "simple" if score < 2 else "moderate" if score < 5 else "complex"
    return Classification(complexity, score, estimate_prompt_tokens(messages, tools), feats)

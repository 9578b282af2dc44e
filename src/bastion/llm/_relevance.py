"""Lexical relevance of a tool to a request: a cheap, model-independent signal that
complements a small model's own tool-choice scores (used by the calibrated decision)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from bastion.messages import ToolSpec

_WORD = re.compile(r"[A-Za-z]+|\d+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "with",
        "by",
        "from",
        "at",
        "as",
        "is",
        "are",
        "be",
        "been",
        "was",
        "were",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "what",
        "which",
        "who",
        "whom",
        "how",
        "why",
        "when",
        "where",
        "do",
        "does",
        "did",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "i",
        "me",
        "my",
        "you",
        "your",
        "we",
        "our",
        "they",
        "their",
        "he",
        "she",
        "his",
        "her",
        "them",
        "us",
        "please",
        "give",
        "get",
        "find",
        "tell",
        "show",
        "me",
        "provide",
        "calculate",
        "compute",
        "using",
        "use",
        "given",
        "based",
        "some",
        "any",
        "all",
        "about",
        "into",
        "over",
        "under",
        "than",
        "then",
        "there",
        "here",
        "also",
        "just",
        "only",
        "not",
        "no",
        "yes",
        "if",
        "so",
        "such",
        "each",
        "number",
        "value",
        "data",
        "information",
        "details",
        "specific",
        "certain",
        "other",
        "more",
        "most",
        "many",
        "much",
    ]
)


def _stem(word: str) -> str:
    """Crude suffix stripping: enough to match ``calculates``/``calculated``/``calculation``."""
    w = word.lower()
    for suf in ("ations", "ation", "ings", "ing", "ies", "ied", "es", "ed", "ly", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)] + ("y" if suf in ("ies", "ied") else "")
    return w


def terms(text: str) -> set[str]:
    """Return the content-word stems of ``text`` (identifiers split on case and punctuation)."""
    out: set[str] = set()
    for raw in _WORD.findall(_CAMEL.sub(" ", text)):
        w = raw.lower()
        if w in _STOP or (len(w) < 3 and not w.isdigit()):
            continue
        if w.isdigit():
            continue
        out.add(_stem(w))
    return out


def tool_terms(spec: ToolSpec) -> tuple[set[str], set[str]]:
    """Return (name terms, description + parameter terms) of a tool."""
    name = terms(spec.name.replace(".", " ").replace("_", " "))
    props: dict[str, Any] = (spec.parameters or {}).get("properties", {}) or {}
    body = terms(spec.description) | terms(" ".join(p.replace("_", " ") for p in props))
    return name, body - name


def relevance(query: str, spec: ToolSpec) -> float:
    """Return a 0..1 score of how much ``query`` talks about what ``spec`` does.

    Name terms weigh double: a tool named ``get_weather`` is about weather even if its
    description is long. The score is the weighted share of the tool's terms that occur
    in the query, damped for tools with very few terms.
    """
    return relevance_of_terms(terms(query), spec)


def relevance_of_terms(q: set[str], spec: ToolSpec) -> float:
    """Return :func:`relevance` for an already-extracted set of query terms."""
    if not q:
        return 0.0
    name, body = tool_terms(spec)
    total = 2 * len(name) + len(body)
    if total == 0:
        return 0.0
    hit = 2 * len(name & q) + len(body & q)
    return hit / (total + 2)


def best(query: str, specs: Sequence[ToolSpec]) -> list[float]:
    """Return :func:`relevance` for each spec."""
    return [relevance(query, s) for s in specs]


def last_user_text(contents: Iterable[tuple[str, str]]) -> str:
    """Return the text of the last user message in ``(role, content)`` pairs."""
    text = ""
    for role, content in contents:
        if role == "user":
            text = content
    return text

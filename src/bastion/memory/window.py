"""Token-based context windowing.

Token counts come from the model's own tokenizer when the backend offers one
(``model.count_tokens(messages) -> int``, e.g. the embedded llama.cpp backend, which applies
its chat template and tokenizes). Other backends use the stated fallback estimate:
**one token per 4 characters (rounded up) plus 4 tokens of framing per message** and
tool-call arguments counted as their JSON text. The estimate errs high on English prose.

The window always keeps the system prompt and the newest turn (the last user message and
everything after it; an oversized one has its longest messages cut in the middle, tool
results first); older turns are added whole, newest first, while they fit. A tool call and
its results are therefore never split, and a tool result whose call is not in the window
(an orphan) is never sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bastion.messages import Message

FALLBACK_CHARS_PER_TOKEN = 4
FALLBACK_MESSAGE_OVERHEAD = 4

TokenCounter = Callable[[Sequence[Message]], int]


def estimate_tokens(messages: Sequence[Message]) -> int:
    """Return the fallback estimate (4 chars/token + 4 tokens per message)."""
    total = 0
    for m in messages:
        chars = len(m.content) + sum(len(c.name) + len(c.arguments_json()) for c in m.tool_calls)
        total += math.ceil(chars / FALLBACK_CHARS_PER_TOKEN) + FALLBACK_MESSAGE_OVERHEAD
    return total


def counter_for(model: Any) -> tuple[TokenCounter, str]:
    """Return the model's own token counter (or the fallback) and a name for it."""
    fn = getattr(model, "count_tokens", None)
    if callable(fn):
        def count(messages: Sequence[Message]) -> int:
            try:
                return int(fn(list(messages)))
            except Exception:  # a tokenizer hiccup must not break the turn
                return estimate_tokens(messages)

        return count, "model tokenizer"
    return estimate_tokens, "estimate (4 chars/token + 4 per message)"


def context_budget(
    model: Any, *, n_ctx: int, max_tokens: int, reserve: int, override: int | None
) -> int:
    """Return the token budget for the prompt: the model's n_ctx less reply and reserve."""
    if override is not None:
        return override
    ctx = getattr(model, "n_ctx", None)
    ctx = int(ctx) if isinstance(ctx, int) and ctx > 0 else n_ctx
    return max(64, ctx - max_tokens - reserve)


def units(history: Sequence[Message]) -> list[list[Message]]:
    """Group messages into windowing units; orphaned tool results are dropped.

    An assistant message with tool calls and the tool results answering it form one unit;
    every other message is its own unit.
    """
    out: list[list[Message]] = []
    open_ids: set[str] = set()
    for m in history:
        if m.role == "tool":
            if out and m.tool_call_id is not None and m.tool_call_id in open_ids:
                out[-1].append(m)
            # else: a result without its call in view -> never sent
            continue
        open_ids = {c.id for c in m.tool_calls} if m.role == "assistant" else set()
        out.append([m])
    return out


@dataclass(slots=True)
class Window:
    """The messages chosen for the prompt and what it cost."""

    messages: list[Message]
    tokens: int
    dropped: int  # history messages left out (still stored and searchable)
    truncated: bool = False


def _shrink(unit: list[Message], excess_tokens: int) -> list[Message]:
    """Cut the longest messages of ``unit`` (tool results first) by ~``excess_tokens``."""
    out = list(unit)
    cut_chars = (excess_tokens + 8) * FALLBACK_CHARS_PER_TOKEN
    order = sorted(
        range(len(out)),
        key=lambda i: (out[i].role == "tool", len(out[i].content)),
        reverse=True,
    )
    for i in order:
        if cut_chars <= 0:
            break
        text = out[i].content
        if len(text) <= 300:  # already short (or already cut): cutting more saves nothing
            continue
        keep = max(200, len(text) - cut_chars - 64)  # 64: room for the note itself
        head = keep * 2 // 3
        tail = keep - head
        note = f"\n[... {len(text) - keep} characters cut to fit the context ...]\n"
        out[i] = replace(out[i], content=text[:head] + note + text[len(text) - tail :])
        cut_chars -= len(text) - keep
    return out


def window(
    system: Message,
    history: Sequence[Message],
    budget: int,
    count: TokenCounter = estimate_tokens,
) -> Window:
    """Return the system prompt plus as much recent history as fits ``budget`` tokens."""
    groups = units(history)
    n_history = len(history)
    if not groups:
        return Window([system], count([system]), n_history)
    # The newest turn starts at the last user message; it is always kept whole.
    start = len(groups) - 1
    for i in range(len(groups) - 1, -1, -1):
        if groups[i][0].role == "user":
            start = i
            break
    current = [m for g in groups[start:] for m in g]
    used = count([system, *current])
    truncated = False
    for _ in range(4):
        if used <= budget:
            break
        shrunk = _shrink(current, used - budget)
        if shrunk == current:
            break
        current, truncated = shrunk, True
        used = count([system, *current])
    # Older history goes in whole turns (a user message and all that answered it), so the
    # model never sees an answer without its question or a call without its results.
    turns: list[list[Message]] = []
    for g in groups[:start]:
        if not turns or g[0].role == "user":
            turns.append([])
        turns[-1].extend(g)
    chosen: list[list[Message]] = []
    for g in reversed(turns):
        cost = count(g)
        if used + cost > budget:
            break  # stop at the first turn that does not fit: no holes in the conversation
        chosen.append(g)
        used += cost
    older = [m for g in reversed(chosen) for m in g]
    msgs = [system, *older, *current]
    return Window(msgs, used, n_history - len(older) - len(current), truncated)

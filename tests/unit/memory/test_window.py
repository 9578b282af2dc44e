from __future__ import annotations

from bastion.memory.window import (
    context_budget,
    counter_for,
    estimate_tokens,
    units,
    window,
)
from bastion.messages import Message, ToolCall

SYSTEM = Message("system", "You are a test.")


def turn(i: int, size: int = 40) -> list[Message]:
    return [Message("user", f"question {i} " + "x" * size), Message("assistant", f"answer {i}")]


def tool_turn(i: int, result: str = "result text") -> list[Message]:
    call = ToolCall("read_file", {"path": f"f{i}.txt"})
    return [
        Message("user", f"read file {i}"),
        Message("assistant", "", tool_calls=[call]),
        Message("tool", result, tool_call_id=call.id, name="read_file"),
        Message("assistant", f"file {i} says {result}"),
    ]


def test_estimate_is_the_stated_fallback() -> None:
    # 4 chars/token rounded up, plus 4 per message
    assert estimate_tokens([Message("user", "abcdefgh")]) == 2 + 4
    assert estimate_tokens([Message("user", "abcdefghi")]) == 3 + 4


def test_everything_fits_in_a_large_budget() -> None:
    history = [m for i in range(3) for m in turn(i)]
    w = window(SYSTEM, history, 10_000)
    assert w.messages == [SYSTEM, *history]
    assert w.dropped == 0


def test_small_budget_keeps_system_and_newest_turns() -> None:
    history = [m for i in range(50) for m in turn(i)]
    w = window(SYSTEM, history, 200)
    assert w.messages[0] is SYSTEM
    assert w.messages[-2:] == history[-2:]
    assert w.tokens <= 200
    assert 0 < w.dropped < len(history)
    # contiguous: the kept history is a suffix of the conversation
    kept = w.messages[1:]
    assert kept == history[-len(kept):]


def test_tool_call_and_results_stay_together() -> None:
    history = [*turn(0), *tool_turn(1, "r" * 200), *turn(2)]
    for budget in range(40, 400, 7):
        w = window(SYSTEM, history, budget)
        msgs = w.messages
        for i, m in enumerate(msgs):
            if m.role == "tool":  # its call is right before it (or before sibling results)
                j = i - 1
                while msgs[j].role == "tool":
                    j -= 1
                assert m.tool_call_id in {c.id for c in msgs[j].tool_calls}
            if m.tool_calls:
                ids = {c.id for c in m.tool_calls}
                got = {x.tool_call_id for x in msgs[i + 1 :] if x.role == "tool"}
                assert ids <= got


def test_orphaned_tool_result_is_never_sent() -> None:
    call = ToolCall("shell", {"cmd": "ls"})
    history = [
        Message("tool", "orphan from a trimmed history", tool_call_id="call_gone", name="shell"),
        Message("user", "hi"),
        Message("assistant", "", tool_calls=[call]),
        Message("tool", "a b c", tool_call_id=call.id, name="shell"),
        Message("tool", "wrong id", tool_call_id="call_other", name="shell"),
    ]
    w = window(SYSTEM, history, 10_000)
    contents = [m.content for m in w.messages]
    assert "orphan from a trimmed history" not in contents
    assert "wrong id" not in contents
    assert "a b c" in contents
    assert len(units(history)) == 2


def test_oversized_newest_turn_is_cut_not_dropped() -> None:
    history = [*turn(0), *tool_turn(1, "line\n" * 5000)]
    w = window(SYSTEM, history, 500)
    assert w.truncated
    assert w.messages[1].content == "read file 1"  # the newest user message is kept
    tool = next(m for m in w.messages if m.role == "tool")
    assert "characters cut to fit the context" in tool.content
    assert w.tokens <= 500


class _Tokenizing:
    n_ctx = 2048

    def __init__(self) -> None:
        self.calls = 0

    def count_tokens(self, messages: list[Message]) -> int:
        self.calls += 1
        return sum(len(m.content.split()) + 3 for m in messages)


def test_model_tokenizer_is_used_when_the_backend_has_one() -> None:
    model = _Tokenizing()
    count, name = counter_for(model)
    assert name == "model tokenizer"
    assert count([Message("user", "one two three")]) == 6
    assert model.calls == 1
    fallback, fname = counter_for(object())
    assert fallback is estimate_tokens and "estimate" in fname


def test_budget_uses_model_n_ctx() -> None:
    assert context_budget(_Tokenizing(), n_ctx=4096, max_tokens=512, reserve=100,
                          override=None) == 2048 - 612
    assert context_budget(object(), n_ctx=4096, max_tokens=512, reserve=100,
                          override=None) == 4096 - 612
    assert context_budget(object(), n_ctx=4096, max_tokens=512, reserve=0, override=777) == 777

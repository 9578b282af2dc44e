"""JSON repair and tool-call extraction from model text."""

from __future__ import annotations

import pytest

from bastion.llm._repair import loads_lenient, parse_tool_calls


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('Sure! Here it is: {"a": 1} hope that helps', {"a": 1}),
        ("{'a': 'it''s', 'b': True, 'c': None}", None),  # broken quoting: not guessed
        (
            "{'path': 'docs', 'recursive': True, 'n': None}",
            {"path": "docs", "recursive": True, "n": None},
        ),
        ('{"a": [1, 2,], "b": 3,}', {"a": [1, 2], "b": 3}),
        ('{path: "docs", depth: 2}', {"path": "docs", "depth": 2}),
        ('{"path": "docs", "opts": {"deep": tru', None),
        ('{"path": "docs", "opts": {"n": 3', {"path": "docs", "opts": {"n": 3}}),
        ('{"q": "unterminated', {"q": "unterminated"}),
        ('<tool_call>{"name": "x", "arguments": {}}</tool_call>', {"name": "x", "arguments": {}}),
        ('{"text": "say \\"hi\\" now"}', {"text": 'say "hi" now'}),
    ],
)
def test_loads_lenient(text: str, expected: object) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            loads_lenient(text)
    else:
        assert loads_lenient(text) == expected


def test_loads_lenient_without_json_raises() -> None:
    with pytest.raises(ValueError, match="no JSON"):
        loads_lenient("I cannot do that.")


def test_parse_tool_calls_shapes() -> None:
    known = {"list_files", "read_file"}
    assert parse_tool_calls('{"name": "list_files", "arguments": {"path": "."}}', known) == [
        ("list_files", {"path": "."})
    ]
    # OpenAI wire shape with arguments as a JSON string
    text = (
        '{"tool_calls": [{"function": {"name": "read_file", '
        '"arguments": "{\\"path\\": \\"a\\"}"}}]}'
    )
    assert parse_tool_calls(text, known) == [("read_file", {"path": "a"})]
    # a list, "parameters" instead of "arguments", Python literals
    text = "[{'name': 'list_files', 'parameters': {'recursive': True}}, {'name': 'read_file'}]"
    assert parse_tool_calls(text, known) == [("list_files", {"recursive": True}), ("read_file", {})]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"name": "rm_rf", "arguments": {}}', "unknown tool"),
        ('{"arguments": {}}', "without a name"),
        ('{"name": "list_files", "arguments": [1]}', "must be a JSON object"),
        ("no json here", "no JSON"),
    ],
)
def test_parse_tool_calls_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_tool_calls(text, {"list_files"})

"""Concrete argument values as evidence for a tool (#22): a command line, a file name, a
number in a parameter's unit, matched by the parameter's schema, never by the tool's name."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from bastion.llm import _evidence, _semantic
from bastion.llm._constrained import argument_fit, choose
from bastion.messages import Message, ToolSpec
from tests.fakes.prims import Prims

RUN = ToolSpec(  # named so that no word of it occurs in the requests below
    "x1",
    "Runs things.",
    {"type": "object", "properties": {
        "line": {"type": "string", "description": "The command line, run by /bin/sh -c."},
        "timeout_s": {"type": "number"}}, "required": ["line"]},
)  # fmt: skip
PROG = ToolSpec(
    "x2",
    "Runs things.",
    {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
)
TIMER = ToolSpec(
    "x3",
    "Counts down.",
    {"type": "object", "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}}},
)
BODY = ToolSpec(
    "x4",
    "Index.",
    {"type": "object", "properties": {
        "height": {"type": "number", "description": "Height in meters."},
        "weight": {"type": "number", "description": "Weight in kilograms."}}},
)  # fmt: skip
REPO = ToolSpec(
    "x5",
    "Status.",
    {"type": "object", "properties": {
        "repo": {"type": "string", "description": "Path of the repository."}}},
)  # fmt: skip


def test_command_shapes_need_a_utility_or_a_command_shape() -> None:
    assert _evidence.command_shapes("grep for ERROR in app.log") == ["grep"]
    assert _evidence.command_shapes("show me the output of `df -h`") == ["df"]
    assert _evidence.command_shapes("show me the last 20 lines: tail -n 20 syslog.txt") == ["tail"]
    assert _evidence.command_shapes("list the biggest files with du and sort") == ["du"]
    assert _evidence.command_shapes("le menu du jour") == []  # French "du"
    assert _evidence.command_shapes("ls | sort") == ["ls", "sort"]
    # utility names that are English words count only in a command's shape
    assert _evidence.command_shapes("sort my socks and find the time to head out") == []
    assert _evidence.command_shapes("how much free time do I have?") == []


def test_file_names_are_names_with_an_extension() -> None:
    assert _evidence.file_names("parse data.json and logs/app.log, e.g. now") == [
        "data.json",
        "logs/app.log",
    ]
    assert _evidence.file_names("it costs 3.50 and the U.S. says so") == []
    assert _evidence.file_names("fetch http://example.test/a.json") == []


def test_a_command_line_or_a_file_fits_a_command_parameter() -> None:
    assert argument_fit(RUN, "show me the last 20 lines of syslog.txt") == 0.5
    assert argument_fit(RUN, "run ls -la and show me the output") == 0.5
    assert argument_fit(RUN, "what's a good name for a cat?") == 0.0
    assert argument_fit(PROG, "parse data.json and count its entries") == 1.0
    assert argument_fit(PROG, "what's 2 + 2?") == 0.0


def test_a_number_counts_half_in_the_unit_a_parameter_is_named_for() -> None:
    assert argument_fit(TIMER, "tell me in 10 minutes that the pasta is done") == 0.25
    assert argument_fit(TIMER, "I waited 10 seconds") == 0.0
    # a unit only in the docs is not enough: "the base is 10 meters" is not about this tool
    assert argument_fit(BODY, "area of a triangle with a base of 10 meters") == 0.0


def test_a_parameter_its_docs_call_a_path_takes_a_path() -> None:
    assert argument_fit(REPO, "are there uncommitted changes in ~/projects/blog?") == 1.0
    assert argument_fit(REPO, "are there uncommitted changes?") == 0.0


NONE_FIRST = [-12.0, -3.0]  # a small model puts its mass on "none" whatever the request


def _unrelated(texts: Sequence[str]) -> list[list[float]]:
    """An embedder under which different texts share no meaning (one-hot by hash)."""
    out = []
    for t in texts:
        v = [0.0] * 256
        v[hashlib.sha256(t.encode()).digest()[0]] = 1.0
        out.append(v)
    return out


async def test_a_request_naming_a_command_calls_the_command_tool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rel = _semantic.SemanticRelevance(_unrelated)
    monkeypatch.setattr(_semantic, "shipped", lambda: rel)

    def ask(text: str) -> list[Message]:
        return [Message("user", text)]

    # decided by the evidence alone: no shared word, no shared meaning, the model says none
    got = await choose(Prims(scores=NONE_FIRST), ask("grep ERROR in app.log"), [RUN], "auto")
    assert got[0] == "x1"
    assert (await choose(Prims(scores=NONE_FIRST), ask("the last 20 lines of syslog.txt"),
                         [RUN], "auto"))[0] == "x1"  # fmt: skip
    got = await choose(Prims(scores=NONE_FIRST), ask("how are you today?"), [RUN], "auto")
    assert got[0] == "none"
    got = await choose(Prims(scores=NONE_FIRST), ask("sort out my week"), [RUN], "auto")
    assert got[0] == "none"
    # among several tools, the one whose parameter takes the command line ranks first
    three = [-3.0, -3.0, -3.0, -1.0]
    got = await choose(Prims(scores=three), ask("run ls -la"), [PROG, TIMER, RUN], "auto")
    assert got[0] == "x1"


def test_a_file_is_no_program_when_the_request_names_the_command() -> None:
    # "using wc": the file is the command's operand, not a reason to write a program
    assert argument_fit(PROG, "count the words in essay.txt using wc") == 0.0
    assert argument_fit(RUN, "count the words in essay.txt using wc") == 0.5
    assert argument_fit(PROG, "count the words in essay.txt") == 1.0


def test_a_quoted_phrase_or_a_bare_word_is_no_path() -> None:
    assert _evidence.path_shaped("~/code/site") and _evidence.path_shaped("notes/a.md")
    assert not _evidence.path_shaped("update docs") and not _evidence.path_shaped("wip")
    # a parameter only documented as a path takes only a value shaped like one
    assert argument_fit(REPO, "commit with message 'update docs'") == 0.0
    assert argument_fit(REPO, "commit with message 'wip'") == 0.0


def _axis(texts: Sequence[str]) -> list[list[float]]:
    """Tools on their own axis; a request about money at a modest cosine (0.3) to the money
    tool, any other request on an axis of its own."""
    out = []
    for t in texts:
        v = [0.0] * 8
        if "exchange" in t:
            v[0] = 1.0
        elif "delivery" in t:
            v[1] = 1.0
        elif "euros" in t:
            v[0], v[7] = 0.3, (1 - 0.3**2) ** 0.5
        else:
            v[6] = 1.0
        out.append(v)
    return out


async def test_a_tool_standing_out_in_meaning_among_several_is_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a cosine of 0.3 alone is not enough to call a tool; standing out from the other
    # offered tools by that much is
    a = ToolSpec("y1", "money exchange", {"type": "object", "properties": {}})
    b = ToolSpec("y2", "food delivery", {"type": "object", "properties": {}})
    rel = _semantic.SemanticRelevance(_axis)
    monkeypatch.setattr(_semantic, "shipped", lambda: rel)
    msgs = [Message("user", "what's 50 dollars in euros")]
    assert (await choose(Prims(scores=[-9.0, -9.0, -3.0]), msgs, [a, b], "auto"))[0] == "y1"
    # the same request with only that tool: nothing to stand out from, no call
    assert (await choose(Prims(scores=[-9.0, -3.0]), msgs, [a], "auto"))[0] == "none"
    # a request near neither tool: no call
    msgs = [Message("user", "how are you today?")]
    assert (await choose(Prims(scores=[-9.0, -9.0, -3.0]), msgs, [a, b], "auto"))[0] == "none"

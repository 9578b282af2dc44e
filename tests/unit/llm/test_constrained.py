"""The choose / fill / answer protocol with scripted primitives (no model)."""

from __future__ import annotations

import pytest

from bastion.errors import ModelOutputError
from bastion.llm._constrained import (
    Policy,
    answer_messages,
    choose,
    constrained_chat,
    fill_schema,
    plain_messages,
)
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from tests.fakes.prims import Prims

WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather for a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "description": "forecast days"},
        },
        "required": ["city"],
    },
)
FILES = ToolSpec(
    "list_files",
    "List the files in a folder.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": []},
)


def user(text: str) -> list[Message]:
    return [Message("system", "be brief"), Message("user", text)]


async def test_choice_shortcuts_need_no_model() -> None:
    p = Prims()
    assert (await choose(p, user("x"), [WEATHER], "none"))[0] == "none"
    assert (await choose(p, user("x"), [WEATHER, FILES], "list_files"))[0] == "list_files"
    assert (await choose(p, user("x"), [WEATHER], "required"))[0] == "get_weather"
    assert p.prompts == []


async def test_model_scores_and_lexical_signal_combine() -> None:
    # the model slightly prefers list_files, but the request is plainly about weather
    p = Prims(scores=[-1.2, -1.0, -3.0])
    name, _ = await choose(p, user("What is the weather in Paris today?"), [WEATHER, FILES], "auto")
    assert name == "get_weather"


async def test_unrelated_request_chooses_no_tool() -> None:
    p = Prims(scores=[-2.0, -2.0, -0.5])
    name, _ = await choose(p, user("Write a poem about love"), [WEATHER, FILES], "auto")
    assert name == "none"


async def test_required_never_returns_none() -> None:
    p = Prims(scores=[-2.0, -1.0])
    name, _ = await choose(p, user("Write a poem about love"), [WEATHER, FILES], "required")
    assert name == "list_files"


async def test_generated_choice_when_backend_cannot_score() -> None:
    p = Prims(scores=None, completions=['{"tool": "list_files"}'])
    name, usage = await choose(p, user("show me the folder docs"), [WEATHER, FILES], "auto")
    assert name == "list_files" and usage == Usage(10, 3)
    enum = p.schemas[0]["properties"]["tool"]["enum"]  # type: ignore[index]
    assert enum == ["get_weather", "list_files", "none"]


async def test_a_generated_pick_alone_calls_no_tool() -> None:
    """#16 item 4: over HTTP (no scores) "hi" ran python because the enum pick named it."""
    p = Prims(scores=None, completions=['{"tool": "list_files"}'])
    name, _ = await choose(p, user("hi"), [WEATHER, FILES], "auto")
    assert name == "none"
    trusting = Prims(scores=None, completions=['{"tool": "list_files"}'])
    # what the HTTP path did before (lexical ranking, as then)
    policy = Policy(trust_generated_pick=True, semantic=False)
    assert (await choose(trusting, user("hi"), [WEATHER, FILES], "auto", policy))[0] == (
        "list_files")
    scored = Prims(scores=[-3.0, -0.5, -2.0])  # real scores that rank a tool above "none"
    assert (await choose(scored, user("hi"), [WEATHER, FILES], "auto"))[0] == "list_files"


async def test_after_a_tool_result_the_model_answers() -> None:
    msgs = [
        *user("list the folder docs"),
        Message("assistant", "", tool_calls=[ToolCall("list_files", {"path": "docs"}, id="c1")]),
        Message("tool", "docs: 3 files", tool_call_id="c1", name="list_files"),
    ]
    p = Prims(scores=[0.0, 0.0, 0.0])
    assert (await choose(p, msgs, [WEATHER, FILES], "auto"))[0] == "none"
    p2 = Prims(scores=[-5.0, 0.0, -5.0])
    # nothing in the request is left for another tool: answer, without asking the model
    assert (await choose(p2, msgs, [WEATHER, FILES], "auto"))[0] == "none"
    assert p2.prompts == []


async def test_after_a_tool_result_another_tool_is_chained_when_the_request_asks() -> None:
    msgs = [
        *user("list the files in the docs folder, then tell me the weather in Oslo"),
        Message("assistant", "", tool_calls=[ToolCall("list_files", {"path": "docs"}, id="c1")]),
        Message("tool", "a.txt", tool_call_id="c1", name="list_files"),
    ]
    p = Prims(scores=[-1.0, -1.0, 0.0])
    assert (await choose(p, msgs, [WEATHER, FILES], "auto"))[0] == "get_weather"
    # the prompt shows the call and its result in words, not as JSON
    shown = p.prompts[0][-1]["content"]
    assert 'Result of list_files(path="docs"):\na.txt' in shown and '"arguments"' not in shown
    never = Policy(answer_after_tool=True)
    assert (await choose(p, msgs, [WEATHER, FILES], "auto", never))[0] == "none"


def test_fill_schema_optional_rules() -> None:
    q = "weather in Oslo in fahrenheit"
    assert set(fill_schema(WEATHER, q, Policy(optional_args="all"))["properties"]) == {
        "city",
        "unit",
        "days",
    }
    assert set(fill_schema(WEATHER, q, Policy(optional_args="none"))["properties"]) == {"city"}
    # enum value mentioned -> unit kept; "days" not mentioned -> dropped
    assert set(fill_schema(WEATHER, q, Policy(optional_args="mentioned"))["properties"]) == {
        "city",
        "unit",
    }


async def test_chat_emits_a_parsed_call() -> None:
    p = Prims(scores=[0.0, -5.0, -5.0], completions=['{"city": "Paris"}'])
    evs = [
        e
        async for e in constrained_chat(
            p, user("weather in Paris?"), [WEATHER, FILES], ChatSettings()
        )
    ]
    calls = [e.call for e in evs if isinstance(e, ToolCallEvent)]
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert evs[-1] == Finish("tool_calls")
    assert p.schemas[-1]["required"] == ["city"]  # type: ignore[index]
    # choose and fill share one prompt (evaluated once); fill continues after the name
    assert p.prompts[0] == p.prompts[-1]
    assert (
        "- get_weather(city: string, unit?: celsius|fahrenheit, days?: integer)"
        in p.prompts[-1][0]["content"]
    )
    assert p.prompts[-1][0]["content"].startswith("be brief")
    assert p.prefixes[-1] == "Function: get_weather\nArguments: "


async def test_chat_streams_text_when_no_tool() -> None:
    p = Prims(scores=[-5.0, -5.0, 0.0], text="just an answer")
    evs = [
        e
        async for e in constrained_chat(p, user("tell me a joke"), [WEATHER, FILES], ChatSettings())
    ]
    assert "".join(e.text for e in evs if isinstance(e, TextDelta)) == "just an answer "
    assert evs[-1] == Finish("stop")


async def test_unparsable_arguments_raise_model_output_error() -> None:
    p = Prims(scores=[0.0, -5.0, -5.0], completions=["city is Paris"])
    with pytest.raises(ModelOutputError, match="not valid JSON"):
        [e async for e in constrained_chat(p, user("weather in Paris?"), [WEATHER], ChatSettings())]


async def test_repeated_identical_call_turns_into_an_answer() -> None:
    msgs = [
        *user("weather in Paris?"),
        Message("assistant", "", tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="c1")]),
        Message("tool", "sunny", tool_call_id="c1", name="get_weather"),
    ]
    p = Prims(scores=[0.0, -5.0], completions=['{"city": "Paris"}'], text="It is sunny.")
    settings = ChatSettings(tool_choice="get_weather")
    evs = [e async for e in constrained_chat(p, msgs, [WEATHER], settings)]
    assert not any(isinstance(e, ToolCallEvent) for e in evs)
    assert "".join(e.text for e in evs if isinstance(e, TextDelta)).strip() == "It is sunny."


def test_plain_messages_flattens_tool_traffic() -> None:
    msgs = [
        Message("system", "sys"),
        Message("user", "hi"),
        Message("assistant", "", tool_calls=[ToolCall("list_files", {"path": "."}, id="c1")]),
        Message("tool", "a.txt", tool_call_id="c1", name="list_files"),
        Message("user", "and?"),
    ]
    out = plain_messages(msgs)
    # the call is not echoed as JSON in the assistant's turn: its result names it
    assert [m["role"] for m in out] == ["system", "user"]
    assert out[1]["content"] == 'hi\n\nResult of list_files(path="."):\na.txt\n\nand?'
    said = [*msgs[:2], Message("assistant", "Let me look.", tool_calls=msgs[2].tool_calls)]
    assert plain_messages(said)[2] == {"role": "assistant", "content": "Let me look."}


async def test_servers_without_prefill_get_a_prompt_about_the_chosen_tool() -> None:
    p = Prims(scores=None, completions=['{"tool": "get_weather"}', '{"city": "Rome"}'])
    p.prefill = False
    evs = [
        e
        async for e in constrained_chat(
            p, user("weather in Rome?"), [WEATHER, FILES], ChatSettings()
        )
    ]
    assert [e.call.arguments for e in evs if isinstance(e, ToolCallEvent)] == [{"city": "Rome"}]
    system = p.prompts[-1][0]["content"]
    assert system.startswith("You call the function below") and "list_files" not in system
    assert "get_weather(city: string" in system and p.prefixes[-1] == ""


def test_copy_spans_and_name_like_arguments() -> None:
    from bastion.llm._constrained import copy_spans

    spans = copy_spans(
        "What's the capital of Brazil? Ask 'Tech Inc' about \"docs/a b.txt\", please."
    )
    assert spans[:2] == ["Tech Inc", "docs/a b.txt"]  # quoted strings first
    assert {"Brazil", "capital of Brazil", "What's"} <= set(spans) and "please" not in spans
    assert "Brazil?" not in spans and "s the capital" not in spans
    # inner punctuation kept; no span crosses a sentence or ends in a function word
    spans = copy_spans("Find a park in Boston, MA. Then go to St. Louis or The Hague")
    assert {"Boston, MA", "St. Louis", "The Hague", "park in Boston"} <= set(spans)
    assert not {"MA. Then", "in Boston", "park in", "the", "Find a park"} & set(spans)
    # a span with a double quote or backslash would break llama.cpp's grammar: not offered
    spans = copy_spans('the code "ATCG" in C:\\data\\x.csv')
    assert "ATCG" in spans and not [x for x in spans if '"' in x or "\\" in x]
    schema = fill_schema(
        ToolSpec(
            "t",
            "",
            {
                "type": "object",
                "properties": {
                    "country": {"type": "string"},
                    "content": {"type": "string"},
                    "unit": {"type": "string", "enum": ["km", "mi"]},
                    "n": {"type": "integer"},
                },
                "required": ["country", "content", "unit", "n"],
            },
        ),
        "the capital of Brazil",
    )
    props = schema["properties"]
    assert "Brazil" in props["country"]["enum"]  # name-like: copied from the request
    assert "enum" not in props["content"] and "enum" not in props["n"]  # written / numbers: free
    assert props["unit"]["enum"] == ["km", "mi"]  # the tool's own enum wins
    free = fill_schema(
        ToolSpec("t", "", {"type": "object", "properties": {"country": {"type": "string"}}}),
        "Brazil",
        Policy(copy_strings=False, optional_args="all"),
    )
    assert "enum" not in free["properties"]["country"]


def test_path_values_and_optional_path_arguments() -> None:
    from bastion.llm._constrained import path_values

    assert path_values("List the files in the notes folder") == ["notes"]
    assert path_values("read notes.txt and the folder called data") == ["notes.txt", "data"]
    assert path_values('open "reports/q 3.csv" in src/app') == ["reports/q 3.csv", "src/app"]
    assert path_values("what is in my folder? 3.5 km, e.g. more") == []
    lister = ToolSpec(
        "list_files",
        "List a directory.",
        {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Directory relative to the root."},
                "recursive": {"type": "boolean"},
            },
        },
    )
    reader = ToolSpec(
        "read_file",
        "Read a file.",
        {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "File path."}},
        },
    )
    # an optional path the request names is filled, with the named value only
    q = "list the files in the notes folder, then read notes/todo.md"
    assert fill_schema(lister, q)["properties"]["path"]["enum"] == ["notes"]
    assert fill_schema(reader, q)["properties"]["path"]["enum"] == ["notes/todo.md"]
    assert "path" not in fill_schema(lister, "list the files please")["properties"]
    # a file name is no folder: list_files keeps its default
    assert "path" not in fill_schema(lister, "show me notes.txt")["properties"]


def test_the_answer_after_tool_steps_gets_the_results_as_the_assistant_said_them() -> None:
    call = ToolCall("list_files", {"path": "docs"})
    msgs = [Message("system", "You are bastion."), Message("user", "How many files in docs?"),
            Message("assistant", "", [call]),
            Message("tool", "docs: 2 files", tool_call_id=call.id, name="list_files")]
    assert answer_messages(msgs) == [
        {"role": "system", "content": "You are bastion."},
        {"role": "user", "content": "How many files in docs?"},
        {"role": "assistant",
         "content": 'I ran list_files(path="docs"). It returned:\ndocs: 2 files'},
        {"role": "user", "content": "Using that result, answer my question: "
                                    "How many files in docs?"},
    ]
    second = ToolCall("read_file", {"path": "docs/a.txt"})
    more = [*msgs, Message("assistant", "", [second]),
            Message("tool", "hello", tool_call_id=second.id, name="read_file")]
    got = answer_messages(more)
    assert got[2]["content"].endswith('I ran read_file(path="docs/a.txt"). It returned:\nhello')
    assert got[3]["content"].startswith("Using those results, answer my question:")


def test_a_turn_without_tool_results_is_answered_on_the_plain_messages() -> None:
    call = ToolCall("list_files", {})
    earlier = [Message("user", "List my files."), Message("assistant", "", [call]),
               Message("tool", "a.txt", tool_call_id=call.id, name="list_files"),
               Message("assistant", "One file: a.txt."), Message("user", "Thanks! Bye.")]
    assert answer_messages(earlier) == plain_messages(earlier)

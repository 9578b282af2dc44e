"""Schema normalisation, choice/argument schemas, compact descriptions and grammar building."""

from __future__ import annotations

import json

import pytest

from bastion.llm._schema import args_schema, choice_schema, describe_tool, normalize_schema
from bastion.messages import ToolSpec
from bastion.tools.base import ToolContext, tool

LOOSE = {
    "type": "dict",
    "properties": {
        "base": {"type": "integer", "description": "The base."},
        "ratio": {"type": "float", "description": "A ratio.", "default": 0.5},
        "pair": {"type": "tuple", "items": {"type": "float"}},
        "anything": {"type": "any"},
        "unit": {"type": "string", "enum": ["cm", "m"]},
    },
    "required": ["base", "missing"],
}


def test_normalize_maps_loose_types_and_closes_objects() -> None:
    s = normalize_schema(LOOSE)
    assert s["type"] == "object"
    assert s["additionalProperties"] is False
    assert s["required"] == ["base"]  # unknown required names dropped
    props = s["properties"]
    assert props["ratio"] == {"type": "number"}  # description/default removed
    assert props["pair"] == {"type": "array", "items": {"type": "number"}}
    assert props["anything"] == {}
    assert props["unit"] == {"type": "string", "enum": ["cm", "m"]}


def test_args_schema_required_only() -> None:
    spec = ToolSpec("area", "Area.", LOOSE)
    assert set(args_schema(spec)["properties"]) == {"base", "ratio", "pair", "anything", "unit"}
    assert set(args_schema(spec, required_only=True)["properties"]) == {"base"}
    assert args_schema(ToolSpec("t", "", {}))["properties"] == {}


def test_choice_schema() -> None:
    s = choice_schema(["a", "b"], allow_none=True)
    assert s["properties"]["tool"]["enum"] == ["a", "b", "none"]
    assert choice_schema(["a"], allow_none=False)["properties"]["tool"]["enum"] == ["a"]


def test_describe_tool_is_compact() -> None:
    spec = ToolSpec("area", "Compute\n  the area.", LOOSE)
    line = describe_tool(spec)
    assert line.startswith(
        "area(base: integer, ratio?: number, pair?: list[number], anything?: any"
    )
    assert "unit?: cm|m" in line and line.endswith("): Compute the area.")
    assert describe_tool(spec, params=False) == "area: Compute the area."
    assert "  base: The base." in describe_tool(spec, param_docs=True)


@tool()
async def search(
    ctx: ToolContext, query: str, limit: int | None = None, tags: list[str] | None = None
) -> str:
    """Search notes.

    Args:
        query: What to look for.
        limit: At most this many.
        tags: Only notes with these tags.
    """
    return query


def test_grammar_builds_for_derived_and_loose_schemas() -> None:
    grammar = pytest.importorskip("llama_cpp.llama_grammar")
    for spec in (search.spec(), ToolSpec("area", "", LOOSE)):
        gbnf = grammar.json_schema_to_gbnf(json.dumps(args_schema(spec)))
        assert "root ::=" in gbnf
    gbnf = grammar.json_schema_to_gbnf(json.dumps(choice_schema(["search"], allow_none=True)))
    assert '\\"search\\"' in gbnf and '\\"none\\"' in gbnf

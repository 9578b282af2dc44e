"""JSON-schema helpers for constrained tool calling: normalise loose schemas, build the
schemas that constrain a tool choice and a tool's arguments, describe tools compactly."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from bastion.messages import ToolSpec

NO_TOOL = "none"

# Loose type names seen in hand-written tool schemas (and in OpenAPI/Python dialects).
_TYPE_ALIASES = {
    "dict": "object",
    "float": "number",
    "double": "number",
    "int": "integer",
    "long": "integer",
    "bool": "boolean",
    "str": "string",
    "list": "array",
    "tuple": "array",
    "set": "array",
}
_KEEP = {
    "type", "properties", "required", "items", "enum", "const", "anyOf", "oneOf", "allOf",
    "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength", "pattern",
    "format", "additionalProperties", "$defs", "$ref", "definitions", "prefixItems",
}  # fmt: skip


_DOCS = {"description", "title", "default", "examples"}


def normalize_schema(schema: Any, *, docs: bool = False) -> dict[str, Any]:
    """Return ``schema`` as strict-enough JSON Schema for grammar conversion.

    Maps loose type names (``dict``, ``float``, ``tuple``, ``any``), drops keys a grammar
    cannot use (descriptions, titles, defaults; kept with ``docs=True``, for a tool spec
    shown to a model) and closes objects to declared properties.
    """
    if not isinstance(schema, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DOCS and docs:
            out[key] = copy.deepcopy(value)
            continue
        if key not in _KEEP:
            continue
        if key == "type":
            if isinstance(value, list):
                mapped = [_TYPE_ALIASES.get(v, v) for v in value if v != "any"]
                if mapped:
                    out["type"] = mapped
            elif value != "any":
                out["type"] = _TYPE_ALIASES.get(value, value)
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {k: normalize_schema(v, docs=docs) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = normalize_schema(value, docs=docs)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            out[key] = [normalize_schema(v, docs=docs) for v in value]
        elif key in ("$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: normalize_schema(v, docs=docs) for k, v in value.items()}
        else:
            out[key] = copy.deepcopy(value)
    if out.get("type") == "object" or "properties" in out:
        out.setdefault("type", "object")
        props = out.setdefault("properties", {})
        out["required"] = [r for r in out.get("required", []) if r in props]
        if props:
            out.setdefault("additionalProperties", False)
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {}
    return out


def args_schema(spec: ToolSpec, *, required_only: bool = False) -> dict[str, Any]:
    """Return the schema that constrains ``spec``'s arguments (an object, closed)."""
    schema = normalize_schema(spec.parameters or {"type": "object", "properties": {}})
    if schema.get("type") != "object":
        schema = {"type": "object", "properties": {}, "additionalProperties": False}
    if required_only:
        req = schema.get("required", [])
        schema["properties"] = {k: v for k, v in schema["properties"].items() if k in req}
    schema["additionalProperties"] = False
    return schema


def choice_schema(names: Sequence[str], *, allow_none: bool) -> dict[str, Any]:
    """Return the schema of a tool-choice answer: ``{"tool": one of names [or "none"]}``."""
    options = [*names, NO_TOOL] if allow_none else list(names)
    return {
        "type": "object",
        "properties": {"tool": {"type": "string", "enum": options}},
        "required": ["tool"],
        "additionalProperties": False,
    }


def _type_label(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(str(v) for v in schema["enum"][:8])
    t = schema.get("type", "any")
    if isinstance(t, list):
        t = "|".join(str(x) for x in t)
    t = _TYPE_ALIASES.get(str(t), str(t))
    if t == "array" and isinstance(schema.get("items"), dict):
        return f"list[{_type_label(schema['items'])}]"
    return t


def describe_tool(spec: ToolSpec, *, params: bool = True, param_docs: bool = False) -> str:
    """Return one compact line (or a few) describing ``spec`` to a model."""
    desc = " ".join(spec.description.split())
    if not params:
        return f"{spec.name}: {desc}"
    schema = spec.parameters or {}
    props: dict[str, Any] = schema.get("properties", {}) or {}
    required = set(schema.get("required", []) or [])
    sig = ", ".join(
        f"{k}{'' if k in required else '?'}: {_type_label(v if isinstance(v, dict) else {})}"
        for k, v in props.items()
    )
    line = f"{spec.name}({sig}): {desc}"
    if param_docs:
        docs = [
            f"  {k}: {' '.join(str(v.get('description', '')).split())}"
            for k, v in props.items()
            if isinstance(v, dict) and v.get("description")
        ]
        if docs:
            line += "\n" + "\n".join(docs)
    return line

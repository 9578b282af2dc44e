"""Repair of the JSON that models commonly break, and extraction of tool calls from text.

Small and hosted models alike emit JSON wrapped in code fences or prose, with single quotes,
trailing commas, Python literals (``True``/``None``), unquoted keys, or cut off before the
closing braces. :func:`loads_lenient` fixes those and nothing more: it never invents content.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_TOOL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


def loads_lenient(text: str) -> Any:
    """Parse ``text`` as JSON, repairing common breakage; raise ``ValueError`` if hopeless."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    candidate = _extract(text)
    if candidate is None:
        raise ValueError("no JSON object or array found")
    for fixer in (lambda s: s, _normalise, lambda s: _close(_normalise(s))):
        try:
            return json.loads(fixer(candidate))
        except ValueError:
            continue
    raise ValueError("JSON could not be repaired")


def _extract(text: str) -> str | None:
    """Return the JSON-looking part of ``text`` (inside fences/tags, from the first brace)."""
    m = _FENCE.search(text) or _TOOL_TAG.search(text)
    if m:
        text = m.group(1).strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None
    start = min(starts)
    end = _matching_end(text, start)
    return text[start:end] if end is not None else text[start:]


def _matching_end(text: str, start: int) -> int | None:
    """Return the index after the bracket closing ``text[start]``, or None if unclosed."""
    depth = 0
    quote: str | None = None
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _normalise(s: str) -> str:
    """Single quotes -> double, Python literals -> JSON, quote bare keys, drop trailing commas."""
    out: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        ch = s[i]
        if ch in "\"'":
            j = i + 1
            buf: list[str] = []
            while j < n and s[j] != ch:
                if s[j] == "\\" and j + 1 < n:
                    nxt = s[j + 1]
                    buf.append("\\" + nxt if nxt != "'" else "'")
                    j += 2
                    continue
                buf.append('\\"' if s[j] == '"' else ("\\n" if s[j] == "\n" else s[j]))
                j += 1
            out.append('"' + "".join(buf) + '"')
            i = j + 1
            continue
        if ch.isalpha() or ch == "_":
            j = i
            while j < n and (s[j].isalnum() or s[j] == "_"):
                j += 1
            word = s[i:j]
            rest = s[j:].lstrip()
            if rest.startswith(":"):
                out.append(json.dumps(word))
            else:
                out.append(_PY_LITERALS.get(word, word))
            i = j
            continue
        out.append(ch)
        i += 1
    text = "".join(out)
    return re.sub(r",\s*([}\]])", r"\1", text)


def _close(s: str) -> str:
    """Close an unterminated string and any open brackets (output cut off by max_tokens)."""
    stack: list[str] = []
    in_str = False
    escaped = False
    for ch in s:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    tail = '"' if in_str else ""
    body = (s + tail).rstrip()
    body = re.sub(r"[,:]\s*$", "", body)
    return body + "".join(reversed(stack))


def parse_tool_calls(text: str, known: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """Extract ``(name, arguments)`` pairs from a model's text reply.

    Accepts the shapes models use: ``{"name":..,"arguments":{..}}`` (``parameters``/``args``
    too), a list of those, OpenAI's ``{"function": {...}}`` and ``{"tool_calls": [...]}``.
    ``arguments`` given as a JSON string are decoded. Raise ``ValueError`` when the text
    holds no parsable call or names a tool not in ``known``.
    """
    data = loads_lenient(text)
    items: list[Any]
    if isinstance(data, dict) and isinstance(data.get("tool_calls"), list):
        items = data["tool_calls"]
    elif isinstance(data, list):
        items = data
    else:
        items = [data]
    calls: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("a tool call must be a JSON object")
        if isinstance(item.get("function"), dict):
            item = item["function"]
        name = item.get("name") or item.get("tool")
        if not isinstance(name, str) or not name:
            raise ValueError("tool call without a name")
        if name not in known:
            raise ValueError(f"unknown tool {name!r}")
        args: Any = next(
            (item[k] for k in ("arguments", "parameters", "args", "input") if k in item), {}
        )
        if isinstance(args, str):
            args = loads_lenient(args) if args.strip() else {}
        if not isinstance(args, dict):
            raise ValueError(f"arguments of {name} must be a JSON object")
        calls.append((name, args))
    if not calls:
        raise ValueError("no tool call found")
    return calls

"""Constrained tool calling in separate steps, shared by every backend without reliable
native tool calls (the embedded model always; HTTP servers when ``native_tools`` is off).

1. **Choose**: which tool, or none. The model's own preference (scored over the closed set
   of options, or generated under a ``{"tool": enum}`` schema) is combined with a lexical
   relevance signal and a calibrated "no tool" threshold, so a tiny model neither ignores
   obviously relevant tools nor calls unrelated ones.
2. **Fill**: the chosen tool's arguments, generated under that tool's JSON schema (types,
   enums, required keys), from a prompt that shows only that tool with its parameter docs.
3. **Answer**: when no tool is chosen, the reply is streamed as plain text.

A backend supplies three primitives (:class:`Primitives`); everything else lives here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bastion.errors import ModelOutputError
from bastion.llm import _relevance
from bastion.llm._repair import loads_lenient
from bastion.llm._schema import NO_TOOL, args_schema, choice_schema, describe_tool
from bastion.llm.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)

Plain = list[dict[str, str]]


class Primitives(Protocol):
    """What a backend provides to the constrained tool-calling protocol.

    ``prefill`` says whether ``complete`` honours ``prefix`` as the start of the assistant's
    reply (in-process models do; chat servers do not, so they get a dedicated prompt).
    """

    prefill: bool

    async def complete(
        self, messages: Plain, *, schema: dict[str, Any] | None, max_tokens: int, prefix: str = ""
    ) -> tuple[str, Usage]:
        """Return one completion (constrained to ``schema`` if given) and its usage."""
        ...

    async def score(
        self, messages: Plain, prefix: str, options: Sequence[str]
    ) -> list[float] | None:
        """Return the log-probability of each option following ``prefix``, or None."""
        ...

    def stream(
        self, messages: Plain, settings: ChatSettings
    ) -> AsyncIterator[str | Usage | Finish]:
        """Stream a free-text reply: text pieces, then :class:`Usage` and :class:`Finish`."""
        ...


@dataclass(frozen=True, slots=True)
class Policy:
    """Knobs of the decision; defaults were calibrated on BFCL's development half."""

    lexical_weight: float = 0.5  # share of the lexical signal when ranking tools
    none_threshold: float = 0.12  # below this lexical relevance (and unless the model ranks a
    # tool above "none") the request is answered without a tool
    optional_args: str = "mentioned"  # "all" | "mentioned" | "none": which optional params to fill
    answer_after_tool: bool = False  # True: always answer after a tool result (no chaining)
    copy_strings: bool = True  # name-like string arguments are copied from the user's words


DEFAULT_POLICY = Policy()

TOOLS_BLOCK = (
    "\n\nFunctions you can call:\n{tools}\n"
    "To call one, reply with 'Function: <name>' and then 'Arguments: <JSON>'. "
    "If none fits the request, reply 'Function: none' and answer normally."
)
CHOOSE_PREFIX = "Function: "
FILL_PREFIX = "Function: {name}\nArguments: "
FILL_SYSTEM = (
    "You call the function below for the user's request. Reply with its arguments as JSON, "
    "copying values from the request.\n{tool}"
)


def _call_label(call: ToolCall | None, name: str | None) -> str:
    if call is None:
        return name or "the tool"
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in call.arguments.items())
    return f"{call.name}({args})"


def plain_messages(messages: Sequence[Message], *, system_extra: str = "") -> Plain:
    """Flatten messages to ``role``/``content`` pairs any chat template accepts.

    A tool call is not shown as JSON in the assistant's turn (a small model then answers by
    echoing JSON); its result becomes a user message that names the call, e.g.
    ``Result of list_files(path="notes"):``. Consecutive messages of one role are merged
    (some templates insist on alternation).
    """
    out: Plain = []
    calls: dict[str, ToolCall] = {}
    for m in messages:
        role = m.role
        content = m.content
        if m.role == "assistant" and m.tool_calls:
            calls.update((c.id, c) for c in m.tool_calls)
            if not content.strip():
                continue
        elif m.role == "tool":
            role = "user"
            call = calls.get(m.tool_call_id or "")
            content = f"Result of {_call_label(call, m.name)}:\n{content}"
        if role == "system" and system_extra:
            content = content + system_extra
            system_extra = ""
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + content
        else:
            out.append({"role": role, "content": content})
    if system_extra:
        out.insert(0, {"role": "system", "content": system_extra.strip()})
    return out


def _turn_tail(messages: Sequence[Message]) -> list[Message]:
    """Return the messages after the last user message (this turn's tool steps)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return list(messages[i + 1 :])
    return []


def _query(messages: Sequence[Message]) -> str:
    return _relevance.last_user_text((m.role, m.content) for m in messages)


def tool_prompt(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> Plain:
    """Return the prompt shared by the choose and fill steps (one prefix, evaluated once).

    The system message gains a compact list of the tools, one line each with typed
    parameters; the conversation follows unchanged.
    """
    listing = "\n".join(f"- {describe_tool(t)}" for t in tools)
    return plain_messages(messages, system_extra=TOOLS_BLOCK.format(tools=listing))


def _softmax(xs: Sequence[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


async def choose(
    prims: Primitives,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    tool_choice: str,
    policy: Policy = DEFAULT_POLICY,
) -> tuple[str, Usage]:
    """Return the chosen tool name (or :data:`NO_TOOL`) and the usage spent deciding."""
    names = [t.name for t in tools]
    none_usage = Usage(0, 0)
    if tool_choice == "none" or not tools:
        return NO_TOOL, none_usage
    if tool_choice in names:
        return tool_choice, none_usage
    allow_none = tool_choice != "required"
    if len(tools) == 1 and not allow_none:
        return names[0], none_usage
    tail = _turn_tail(messages)
    query = _query(messages)
    if allow_none and any(m.role == "tool" for m in tail):
        if policy.answer_after_tool:
            return NO_TOOL, none_usage
        # A tool already answered in this turn. Chain only on what the request still asks
        # for: its words minus those of the tools already called (a small model otherwise
        # repeats the call it just made).
        remaining = _relevance.terms(query) - _called_terms(tail, tools)
        lexical = [_relevance.relevance_of_terms(remaining, t) for t in tools]
        keep = [i for i, lex in enumerate(lexical) if lex >= policy.none_threshold]
        if not keep:
            return NO_TOOL, none_usage
        # only the tools the rest of the request is about compete (the prompt still lists
        # every tool, so the choose step's prefix is shared)
        shown = tools
        tools = [tools[i] for i in keep]
        lexical = [lexical[i] for i in keep]
        names = [t.name for t in tools]
    else:
        shown = tools
        lexical = _relevance.best(query, tools)
    prompt = tool_prompt(messages, shown)
    options = [*names, NO_TOOL] if allow_none else names
    scores = await prims.score(prompt, CHOOSE_PREFIX, options)
    usage = none_usage
    if scores is None:  # the backend cannot score: let it generate under an enum schema
        text, usage = await prims.complete(
            prompt, schema=choice_schema(names, allow_none=allow_none), max_tokens=64
        )
        try:
            picked = str(loads_lenient(text).get("tool", NO_TOOL))
        except (ValueError, AttributeError):
            picked = NO_TOOL
        scores = [0.0 if o == picked else -20.0 for o in options]
    tool_scores = scores[: len(names)]
    model_p = _softmax(tool_scores)  # the model's preference among the tools only
    w = policy.lexical_weight
    combined = [w * lex + (1 - w) * p for lex, p in zip(lexical, model_p, strict=False)]
    best = max(range(len(names)), key=lambda i: combined[i])
    if allow_none:
        # Small models put most mass on "none" whatever the request, so "none" is decided
        # by evidence for a tool: the request shares content words with some tool, or the
        # model itself ranks a tool above "none".
        model_wants_tool = max(tool_scores) > scores[-1]
        if max(lexical) < policy.none_threshold and not model_wants_tool:
            return NO_TOOL, usage
    return names[best], usage


_PATH_WORDS = frozenset(["path", "file", "filename", "dir", "directory", "folder", "filepath"])
_PATH_TOKEN = re.compile(
    r"(?<![\w/.-])(?:[\w.-]*/[\w./-]+|[\w-]+\.[A-Za-z][A-Za-z0-9]{0,4})(?![\w/-])"
)
_QUOTED = re.compile(r"(?:^|(?<=\s))'([^'\n]{1,80})'(?=\W|$)|\"([^\"\n]{1,80})\"")
_NEAR_FOLDER = (
    re.compile(r"\b([\w./-]+)\s+(?:folder|directory|dir)\b", re.IGNORECASE),
    re.compile(r"\b(?:folder|directory|dir)\s+(?:called\s+|named\s+)?([\w./-]+)", re.I),
)
_NOT_A_NAME = frozenset(
    ["current", "working", "same", "whole", "entire", "every", "which", "that", "this", "each",
     "called", "named", "and", "then", "the", "my", "your", "our", "a", "an", "in", "of", "to",
     "for", "from", "is", "with", "at", "on", "it", "its", "their", "his", "her", "some",
     "any", "all", "new", "another", "one", "its", "what"]
)  # fmt: skip


def _path_kind(name: str, prop: dict[str, Any]) -> str | None:
    """Return ``"dir"``, ``"file"`` or ``"any"`` for a path parameter, else None.

    Judged from the parameter's name and its description (``Directory relative to ...``).
    """
    if prop.get("type") not in (None, "string") or any(k in prop for k in ("enum", "const")):
        return None
    parts = set(re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", name.lower()))
    if not parts & _PATH_WORDS:
        return None
    doc = set(re.findall(r"[a-z]+", str(prop.get("description", "")).lower()))
    if parts & {"dir", "directory", "folder"} or (
        doc & {"directory", "folder", "dir"} and not doc & {"file", "filename"}
    ):
        return "dir"
    if parts & {"file", "filename", "filepath"} or doc & {"file", "filename"}:
        return "file"
    return "any"


def _paths_for(kind: str, values: list[str]) -> list[str]:
    has_ext = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}$")
    if kind == "dir":
        return [v for v in values if not has_ext.search(v)]
    if kind == "file":
        return [v for v in values if has_ext.search(v) or "/" in v]
    return values


def path_values(text: str) -> list[str]:
    """Return the file and folder names a request gives: quoted strings, tokens with a slash
    or a file extension, and the word next to "folder"/"directory" (``the notes folder``)."""
    out: list[str] = []

    def add(v: str) -> None:
        v = v.strip().rstrip(".,;:!?")
        if v and v not in out and v.lower() not in _NOT_A_NAME:
            out.append(v)

    for a, b in _QUOTED.findall(text):
        add(a or b)
    text = _QUOTED.sub(" ", text)
    for m in _PATH_TOKEN.finditer(text):
        tok = m.group(0)
        if not re.fullmatch(r"(?i)[\d.]+|e\.g|i\.e|and/or|\w+/\w*s", tok):
            add(tok)
    for rx in _NEAR_FOLDER:
        for m in rx.finditer(text):
            add(m.group(1))
    return out


_SYNONYMS = {"folder": "directory", "dir": "directory", "filename": "file", "filepath": "path"}


def _canon(words: set[str]) -> set[str]:
    return {_SYNONYMS.get(w, w) for w in words}


def _called_terms(tail: Sequence[Message], tools: Sequence[ToolSpec]) -> set[str]:
    """Return the name and description terms of every tool called in ``tail``."""
    by_name = {t.name: t for t in tools}
    out: set[str] = set()
    for m in tail:
        for c in m.tool_calls:
            spec = by_name.get(c.name)
            if spec is not None:
                name, body = _relevance.tool_terms(spec)
                out |= name | body
    return out


def _mentioned(name: str, spec_prop: dict[str, Any], query: str) -> bool:
    """Whether the request seems to give a value for an optional parameter.

    Evidence is the parameter's name in the request (``folder``/``directory`` count as
    one word), one of its enum values, or, for a path parameter, a file or folder name.
    """
    q = _canon(_relevance.terms(query))
    words = _canon(_relevance.terms(name.replace("_", " ")))
    if words and words <= q:
        return True
    enum = spec_prop.get("enum")
    if isinstance(enum, list):
        low = query.lower()
        return any(isinstance(v, str) and v and v.lower() in low for v in enum)
    kind = _path_kind(name, spec_prop)
    return kind is not None and bool(_paths_for(kind, path_values(query)))


# Parameter names whose values are written, not quoted from the request.
_FREE_TEXT = frozenset(
    [
        "content",
        "text",
        "body",
        "code",
        "script",
        "command",
        "cmd",
        "message",
        "prompt",
        "description",
        "query",
        "question",
        "html",
        "json",
        "sql",
        "data",
        "expression",
        "formula",
        "function",
        "equation",
        "program",
        "source",
        "answer",
        "reply",
        "summary",
        "note",
        "notes",
        "comment",
        "template",
        "pattern",
        "regex",
        "input",
        "instructions",
    ]
)
_EDGE_PUNCT = "\"'`.,;:!?()[]{}<>"


def copy_spans(text: str, max_words: int = 6, limit: int = 400) -> list[str]:
    """Return the word spans of ``text`` (1..``max_words`` words), quoted strings first.

    Offered as the only allowed values of a name-like string argument, they make a small
    model copy ``Brazil`` from the request instead of inventing ``Bahia``.
    """
    spans: list[str] = []
    seen: set[str] = set()

    def add(v: str) -> None:
        v = v.strip()
        if v and v not in seen and len(spans) < limit:
            seen.add(v)
            spans.append(v)

    for quoted in re.findall(r"(?:^|\s)'([^']{1,80})'(?=\W|$)|\"([^\"]{1,80})\"", text):
        add(quoted[0] or quoted[1])
    words = [w.strip(_EDGE_PUNCT) for w in text.split()]
    for n in range(1, max_words + 1):
        for i in range(len(words) - n + 1):
            chunk = words[i : i + n]
            if all(chunk):
                add(" ".join(chunk))
    return spans


def _name_like(name: str, schema: dict[str, Any]) -> bool:
    if schema.get("type") != "string" or any(
        k in schema for k in ("enum", "const", "pattern", "format")
    ):
        return False
    parts = set(re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", name.lower()))
    return not parts & _FREE_TEXT


def fill_schema(spec: ToolSpec, query: str, policy: Policy = DEFAULT_POLICY) -> dict[str, Any]:
    """Return the argument schema used for ``spec`` under ``policy``'s optional-args rule."""
    schema = args_schema(spec)
    raw_props: dict[str, Any] = (spec.parameters or {}).get("properties", {}) or {}
    path_args: set[str] = set()
    if policy.copy_strings:
        spans = copy_spans(query)
        paths = path_values(query)
        for k, v in schema["properties"].items():
            if not isinstance(v, dict):
                continue
            raw = raw_props.get(k)
            kind = _path_kind(k, raw if isinstance(raw, dict) else v)
            fitting = _paths_for(kind, paths) if kind else []
            if fitting and v.get("type") == "string":
                v["enum"] = fitting  # a path the request names, verbatim
                path_args.add(k)
            elif spans and _name_like(k, v):
                v["enum"] = spans
    if policy.optional_args == "all":
        return schema
    req = set(schema.get("required", []))
    keep = {
        k: v
        for k, v in schema["properties"].items()
        if k in req
        or (
            policy.optional_args == "mentioned"
            and _mentioned(
                k, raw_props.get(k, {}) if isinstance(raw_props.get(k), dict) else {}, query
            )
        )
    }
    schema["properties"] = keep
    # an optional path whose value the request names is filled, not left to the model
    named = [k for k in keep if k not in req and k in path_args]
    if named:
        schema["required"] = [*schema.get("required", []), *named]
    return schema


async def fill(
    prims: Primitives,
    messages: Sequence[Message],
    spec: ToolSpec,
    tools: Sequence[ToolSpec] = (),
    policy: Policy = DEFAULT_POLICY,
    max_tokens: int = 256,
) -> tuple[dict[str, Any], Usage]:
    """Generate ``spec``'s arguments under its schema (the grammar makes them well-formed)."""
    query = _query(messages)
    schema = fill_schema(spec, query, policy)
    if not schema["properties"]:
        return {}, Usage(0, 0)
    if prims.prefill:  # continue the choose step's prompt: its prefix is already evaluated
        prompt = tool_prompt(messages, tools or [spec])
        prefix = FILL_PREFIX.format(name=spec.name)
    else:  # a prompt about this one tool, with its parameter docs
        system = FILL_SYSTEM.format(tool=describe_tool(spec, param_docs=True))
        convo = plain_messages([m for m in messages if m.role != "system"])
        prompt, prefix = [{"role": "system", "content": system}, *convo], ""
    text, usage = await prims.complete(prompt, schema=schema, max_tokens=max_tokens, prefix=prefix)
    try:
        args = loads_lenient(text)
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise ModelOutputError(
            f"the model's arguments for {spec.name} are not valid JSON: {text[:120]!r}",
            fix="retry, raise model.max_tokens, or use a larger model",
        )
    return args, usage


async def constrained_chat(
    prims: Primitives,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    settings: ChatSettings,
    policy: Policy = DEFAULT_POLICY,
) -> AsyncIterator[ModelEvent]:
    """Run one model step with the choose / fill / answer protocol, yielding model events."""
    choice, usage = await choose(prims, messages, tools, settings.tool_choice, policy)
    prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
    if choice != NO_TOOL:
        spec = next(t for t in tools if t.name == choice)
        args, u = await fill(
            prims, messages, spec, tools, policy, max_tokens=max(64, settings.max_tokens)
        )
        prompt_tokens += u.prompt_tokens
        completion_tokens += u.completion_tokens
        call = ToolCall(spec.name, args)
        if not _repeats(call, messages):
            yield ToolCallEvent(call)
            yield Usage(prompt_tokens, completion_tokens)
            yield Finish("tool_calls")
            return
    reason = "stop"
    async for piece in prims.stream(plain_messages(messages), settings):
        if isinstance(piece, Usage):
            prompt_tokens += piece.prompt_tokens
            completion_tokens += piece.completion_tokens
        elif isinstance(piece, Finish):
            reason = piece.reason
        elif piece:
            yield TextDelta(piece)
    yield Usage(prompt_tokens, completion_tokens)
    yield Finish(reason)


def _repeats(call: ToolCall, messages: Sequence[Message]) -> bool:
    """Whether this turn already made exactly this call (a loop a small model falls into)."""
    for m in _turn_tail(messages):
        for c in m.tool_calls:
            if c.name == call.name and c.arguments == call.arguments:
                return True
    return False

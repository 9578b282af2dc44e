"""Constrained tool calling in separate steps, shared by every backend without reliable
native tool calls (the embedded model always; HTTP servers when ``native_tools`` is off).

1. **Choose**: which tool, or none. The model's own preference (scored over the closed set
   of options, or generated under a ``{"tool": enum}`` schema) is combined with a lexical
   relevance signal and a calibrated "no tool" threshold, so a tiny model neither ignores
   obviously relevant tools nor calls unrelated ones. A tool needing more numbers than the
   request gives is not a candidate (the request is not asking to run it).
2. **Fill**: the chosen tool's arguments, generated under that tool's JSON schema (types,
   enums, required keys) narrowed to values the request supports (:mod:`._grounding`:
   its numbers, the enum values and documented options it names, spans of its words for
   names, the options it turns on or off); optional arguments it mentions must be filled.
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
from bastion.llm import _evidence, _grounding, _relevance, _semantic
from bastion.llm._repair import loads_lenient
from bastion.llm._schema import NO_TOOL, args_schema, choice_schema, describe_tool
from bastion.messages import (
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

    lexical_weight: float = 0.7  # share of the lexical signal (relative to the best tool's)
    # when ranking tools; the rest is the model's own preference
    none_threshold: float = 0.16  # below this lexical relevance (and unless the model ranks a
    # tool above "none") the request is answered without a tool
    require_inputs: bool = True  # a tool whose required numbers the request does not give
    # is not called unless asked for by name (tool_choice)
    optional_args: str = "mentioned"  # "all" | "mentioned" | "none": which optional params to fill
    answer_after_tool: bool = False  # True: always answer after a tool result (no chaining)
    copy_strings: bool = True  # name-like string arguments are copied from the user's words
    fill_docs: bool = False  # fill from a prompt showing only the chosen tool, with its
    # parameter docs (costs a second prompt evaluation on in-process models)
    trust_generated_pick: bool = False  # True: without scores (an HTTP server), a tool the
    # model generates under the choice schema means "call a tool" even when the request
    # shares no word with any tool. A generated pick names some tool almost always ("hi" ->
    # python), so by default it counts only when the request touches one (bench/tool_modes.py)
    semantic: bool = True  # weigh the meaning of the request against each tool's with the
    # shipped sentence embedder (:mod:`._semantic`) where it is installed; lexical otherwise.
    # The knobs below were calibrated on the dev halves of bench/data/natural and BFCL.
    semantic_threshold: float = 0.55  # a tool is also called (besides lexical relevance
    # >= none_threshold or the model ranking it above "none") when the cosine of the request
    # and the tool, plus semantic_fit x the share of its parameters the request gives
    # specific values for (a path, an enum value, a date, an option it turns on), reaches this
    semantic_fit: float = 1.5
    rank_lexical: float = 0.3  # ranking with meaning: share of lexical relevance (relative
    rank_semantic: float = 1.0  # to the best tool's), of the cosine (relative likewise),
    rank_model: float = 0.5  # and of the model's preference, scaled by how clearly the model
    # separates its first choice from its second (a flat preference carries no weight)
    rank_fit: float = 1.5  # and of argument_fit: the share of its parameters the request
    # gives concrete values for (a command line for a command, a path for a path)
    rank_sim_floor: float = 0.4  # the cosines are scaled by the best one, or by this floor
    # where the best is lower (cosines that are all small tell tools apart by noise)
    semantic_margin: float = 1.0  # with several tools offered, a tool whose cosine stands
    # out from the others' by d gains semantic_margin x d of evidence for calling it
    enum_meaning: float = 0.12  # an enum the request names no value of by its words is
    # filled with the value whose meaning stands out by this cosine margin ("on the TV" ->
    # living_room_tv; "take it off my list" -> remove); 0: the model picks among them all.
    # Fill only: as evidence for calling a tool it fired on unrelated tools (dev halves)


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


def answer_messages(messages: Sequence[Message]) -> Plain:
    """The prompt for the answer after this turn's tool steps: the results as the assistant's.

    :func:`plain_messages` shows a result as a user message after the question, and a small
    model then takes it for a new request: asked "How many files are in my workspace? List
    them." after ``list_files()`` returned five, the shipped model explained Python's
    ``os.listdir`` instead. Here the assistant says what it ran and what came back ("I ran
    list_files(). It returned: ..."), and the user asks the question again, to be answered
    from that. On a dev set of 12 tool results written for this, the shipped model's answer
    held the result's fact in 12 against 7; on bench/tasks_e2e.py (not tuned on) 15 of 40
    tasks against 12, mostly by copying what the tool returned (answers in its own words: 11
    both times). A turn without tool results is :func:`plain_messages` unchanged.
    """
    tail = _turn_tail(messages)
    if not any(m.role == "tool" for m in tail):
        return plain_messages(messages)
    head = list(messages[: len(messages) - len(tail)])
    out = plain_messages(head)
    calls: dict[str, ToolCall] = {}
    said: list[str] = []
    results = 0
    for m in tail:
        if m.role == "assistant":
            calls.update((c.id, c) for c in m.tool_calls)
            if m.content.strip():
                said.append(m.content.strip())
        elif m.role == "tool":
            results += 1
            call = calls.get(m.tool_call_id or "")
            said.append(f"I ran {_call_label(call, m.name)}. It returned:\n{m.content}")
    out.append({"role": "assistant", "content": "\n\n".join(said)})
    that = "that result" if results == 1 else "those results"
    out.append({"role": "user",
                "content": f"Using {that}, answer my question: {_query(head)}"})
    return out


def _turn_tail(messages: Sequence[Message]) -> list[Message]:
    """Return the messages after the last user message (this turn's tool steps)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return list(messages[i + 1 :])
    return []


def _query(messages: Sequence[Message]) -> str:
    return _relevance.last_user_text((m.role, m.content) for m in messages)


def tool_prompt(
    messages: Sequence[Message], tools: Sequence[ToolSpec], *, param_docs: bool = False
) -> Plain:
    """Return the prompt shared by the choose and fill steps (one prefix, evaluated once).

    The system message gains a compact list of the tools, one line each with typed
    parameters (and their docs with ``param_docs``); the conversation follows unchanged.
    """
    listing = "\n".join(f"- {describe_tool(t, param_docs=param_docs)}" for t in tools)
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
        sims: list[float] | None = None
    else:
        shown = tools
        lexical = _relevance.best(query, tools)
        relevance = _semantic.shipped() if policy.semantic else None
        sims = relevance.tools(query, tools) if relevance is not None else None
    if allow_none and policy.require_inputs:
        # a request that gives fewer numbers than a tool needs is not asking to run it
        # ("what is the acceleration of a ball thrown upwards?" vs a tool needing 3 inputs)
        given = len(_grounding.numbers(f"{query}\n{_results_text(tail)}"))
        fits = [i for i, t in enumerate(tools) if _numbers_needed(t) <= given]
        if not fits:
            return NO_TOOL, none_usage
        if len(fits) < len(tools):
            tools = [tools[i] for i in fits]
            lexical = [lexical[i] for i in fits]
            sims = [sims[i] for i in fits] if sims is not None else None
            names = [t.name for t in tools]
    prompt = tool_prompt(messages, shown)
    options = [*names, NO_TOOL] if allow_none else names
    scores = await prims.score(prompt, CHOOSE_PREFIX, options)
    usage = none_usage
    generated = scores is None
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
    top = max(lexical, default=0.0)
    rel = [lex / top for lex in lexical] if top > 0 else lexical  # 1.0 for the best match
    if sims is None:
        w = policy.lexical_weight
        combined = [w * lex + (1 - w) * p for lex, p in zip(rel, model_p, strict=False)]
    else:
        combined = _ranked(policy, rel, sims, model_p)
        if policy.rank_fit:  # the tool whose parameters take the request's values
            fit = [argument_fit(t, query) for t in tools]
            combined = [c + policy.rank_fit * f for c, f in zip(combined, fit, strict=True)]
    best = max(range(len(names)), key=lambda i: combined[i])
    if allow_none:
        # Small models put most mass on "none" whatever the request, so "none" is decided
        # by evidence for a tool: the request shares content words with some tool, or the
        # model itself ranks a tool above "none".
        model_wants_tool = max(tool_scores) > scores[-1]
        if generated and model_wants_tool and not policy.trust_generated_pick:
            # a generated pick names some tool almost always ("hi" -> python): it says only
            # that the model wants a tool, which counts when the request's words touch one
            model_wants_tool = max(lexical) > 0
        weak = max(lexical) < policy.none_threshold
        if weak and sims is not None:
            evidence = [
                sim
                + policy.semantic_fit * argument_fit(t, query)
                + policy.semantic_margin * _standout(sims, i)
                for i, (sim, t) in enumerate(zip(sims, tools, strict=True))
            ]
            weak = max(evidence) < policy.semantic_threshold
        if weak and not model_wants_tool:
            return NO_TOOL, usage
    return names[best], usage


def _ranked(
    policy: Policy, rel: Sequence[float], sims: Sequence[float], model_p: Sequence[float]
) -> list[float]:
    """Return each tool's rank score from lexical relevance, meaning and the model's choice.

    The model's preference weighs by its margin: the gap between its first and second choice
    (a small model that spreads its mass evenly says little about which tool fits).
    """
    top_sim = max(max(sims), policy.rank_sim_floor)
    srel = [s / top_sim if top_sim > 0 else 0.0 for s in sims]
    ordered = sorted(model_p, reverse=True)
    margin = ordered[0] - ordered[1] if len(ordered) > 1 else 0.0
    wm = policy.rank_model * margin
    return [
        policy.rank_lexical * r + policy.rank_semantic * s + wm * p
        for r, s, p in zip(rel, srel, model_p, strict=True)
    ]


def _standout(sims: Sequence[float], i: int) -> float:
    """Return how far tool ``i``'s cosine stands above every other offered tool's (0 when it
    does not, or when it is the only tool: a margin needs something to stand out from)."""
    others = [s for j, s in enumerate(sims) if j != i]
    return max(0.0, sims[i] - max(others)) if others else 0.0


def _results_text(tail: Sequence[Message]) -> str:
    return "\n".join(m.content for m in tail if m.role == "tool")


def _numbers_needed(spec: ToolSpec) -> int:
    """Return how many required arguments of ``spec`` are numbers (or lists of numbers)."""
    schema = spec.parameters or {}
    props: dict[str, Any] = schema.get("properties", {}) or {}
    n = 0
    for k in schema.get("required", []) or []:
        p = props.get(k)
        if not isinstance(p, dict) or "default" in p:
            continue
        t = p.get("type")
        items: dict[str, Any] = p["items"] if isinstance(p.get("items"), dict) else {}
        if t == "array":
            t = items.get("type")
        if t in ("integer", "number"):
            n += 1
    return n


_PATH_WORDS = frozenset(["path", "file", "filename", "dir", "directory", "folder", "filepath"])
_PATH_TOKEN = re.compile(
    r"(?<![\w/.~-])(?:~?[\w.-]*/[\w./-]+|[\w-]+\.[A-Za-z][A-Za-z0-9]{0,4})(?![\w/-])"
)
# a quoted phrase short enough to be a name (the phrases a request hands over as a value may
# be longer: :func:`._grounding.quoted`)
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
    doc = set(re.findall(r"[a-z]+", str(prop.get("description", "")).lower()))
    if not parts & _PATH_WORDS:
        # "Path of the repository.": a parameter its docs call a path
        said_path = re.match(r"(?i)\s*(?:the\s+)?path\b", str(prop.get("description", "")))
        return "any" if said_path else None
    if parts & {"dir", "directory", "folder"} or (
        doc & {"directory", "folder", "dir"} and not doc & {"file", "filename"}
    ):
        return "dir"
    if parts & {"file", "filename", "filepath"} or doc & {"file", "filename"}:
        return "file"
    return "any"


def _paths_for(kind: str, values: list[str]) -> list[str]:
    """Return the request's names (:func:`path_values`) a ``kind`` path parameter takes.

    A parameter only documented as a path ("Path of the repository.") takes only a value
    shaped like one: a quoted phrase is no path there ("commit with message 'update docs'").
    """
    has_ext = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}$")
    if kind == "dir":
        values = [v for v in values if not has_ext.search(v)]
    elif kind == "file":
        values = [v for v in values if has_ext.search(v) or "/" in v]
    return [v for v in values if kind != "any" or _evidence.path_shaped(v)]


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


def grammar_safe(value: str) -> bool:
    """Whether a string can be offered as an enum choice: llama.cpp's JSON-schema-to-grammar
    converter (llama-cpp-python 0.3.x) writes a broken grammar for a ``"`` or ``\\`` inside
    one, so such spans are not offered (the model writes those values itself)."""
    return '"' not in value and "\\" not in value


_FUNCTION_WORDS = frozenset(
    ["a", "an", "the", "in", "on", "at", "for", "of", "to", "from", "with", "by", "and", "or",
     "is", "are", "was", "be", "my", "me", "i", "you", "your", "what", "how", "which", "that",
     "this", "it", "its", "as", "into", "about", "than", "if", "can", "could", "would",
     "please", "some", "any", "do", "does", "get", "find", "give", "show", "tell"]
)  # fmt: skip


def copy_spans(text: str, max_words: int = 6, limit: int = 400) -> list[str]:
    """Return the word spans of ``text`` (1..``max_words`` words), quoted strings first.

    Offered as the only allowed values of a name-like string argument, they make a small
    model copy ``Brazil`` from the request instead of inventing ``Bahia``. A span keeps its
    inner punctuation (``Boston, MA``), does not cross a sentence end, and does not end in
    (or start with a lower-case) function word (``in Austin``, ``the next``).
    """
    spans: list[str] = []
    seen: set[str] = set()

    def add(v: str) -> None:
        v = v.strip()
        if v and v not in seen and len(spans) < limit and grammar_safe(v):
            seen.add(v)
            spans.append(v)

    inside = _grounding.quoted(text)
    for qa, qb in inside:
        add(text[qa:qb])
    toks = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    for n in range(1, max_words + 1):
        for i in range(len(toks) - n + 1):
            chunk = [text[a:b] for a, b in toks[i : i + n]]
            if any(re.search(r"[.?!;:]$", w) and not re.fullmatch(r"[A-Z][a-z]{0,2}\.", w)
                   for w in chunk[:-1]):  # fmt: skip
                continue  # crosses a sentence end (initials like "St." may stay inside)
            first, last = chunk[0].strip(_EDGE_PUNCT), chunk[-1].strip(_EDGE_PUNCT)
            if (
                not first
                or not last
                or last.lower() in _FUNCTION_WORDS
                or (first.lower() in _FUNCTION_WORDS and first != "The")  # The Hague
            ):
                continue
            a, b = toks[i][0], toks[i + n - 1][1]
            span = text[a:b]
            a += len(span) - len(span.lstrip(_EDGE_PUNCT))
            b -= len(span) - len(span.rstrip(_EDGE_PUNCT))
            if any(a < qb and b > qa and not (a <= qa and b >= qb) for qa, qb in inside):
                continue  # a quoted phrase is one value ('fix the fence', not 'fence')
            add(text[a:b])
    return spans


def _name_like(name: str, schema: dict[str, Any]) -> bool:
    if schema.get("type") != "string" or any(
        k in schema for k in ("enum", "const", "pattern", "format")
    ):
        return False
    parts = set(re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", name.lower()))
    return not parts & _FREE_TEXT


# Free-text parameters that pass words on (a note, a message), not ones whose value is
# written from them (a command, a program, a search query).
_PROSE = frozenset(
    ["text", "message", "body", "content", "note", "notes", "comment", "reply", "description"]
)


def _prose(name: str, schema: dict[str, Any]) -> bool:
    if schema.get("type") != "string" or any(
        k in schema for k in ("enum", "const", "pattern", "format")
    ):
        return False
    return bool(set(re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", name.lower())) & _PROSE)


def _anchored(props: dict[str, Any], query: str, tool_words: set[str]) -> dict[str, list[str]]:
    """Return, per name-like parameter, the names the request gives next to the word for
    what it names (:func:`._grounding.anchored_names`). A name two parameters would both
    take (``color1``/``color2``; ``time``/``from_timezone`` in "New York time zone") is
    anchored to neither."""
    found = {
        k: [n for n in _grounding.anchored_names(k, query, tool_words) if grammar_safe(n)]
        for k, v in props.items()
        if isinstance(v, dict) and _name_like(k, v)
    }
    shared = {
        n for k, ns in found.items() for n in ns if any(n in found[j] for j in found if j != k)
    }
    return {k: ns for k, ns in found.items() if ns and not set(ns) & shared}


def _meant_value(
    enum: list[Any], query: str, meaning: _semantic.SemanticRelevance, margin: float
) -> Any:
    """Return the enum value the request means without naming it, or None.

    The cosine between the request and each value written as words (``living_room_tv`` ->
    "living room tv") with the shipped sentence embedder; a value counts only when it stands
    out from every other by ``margin`` (calibrated on the dev halves: "I want to watch The
    Office on the TV" -> ``living_room_tv``, "take 'wash the car' off my list" -> ``remove``).
    """
    if margin <= 0 or len(enum) < 2 or not all(isinstance(e, str) for e in enum):
        return None
    texts = [" ".join(_grounding.word_stems_raw(e)) for e in enum]
    sims = meaning.similarities(query, texts)
    best = max(range(len(enum)), key=lambda i: sims[i])
    return enum[best] if _standout(sims, best) >= margin else None


def _ground(
    name: str,
    v: dict[str, Any],
    raw: dict[str, Any],
    query: str,
    numbers_text: str,
    tool_words: set[str],
    meaning: _semantic.SemanticRelevance | None = None,
    margin: float = 0.0,
) -> tuple[dict[str, Any], bool]:
    """Constrain one argument to values the request supports; say whether it is mentioned.

    * an enum (or a list of enum items): the values the request names, when it names some;
      else (with ``meaning``) the one value whose meaning stands out by ``margin``;
    * a string whose docs quote its choices (``'Celsius' or 'Fahrenheit'``): the quoted
      choices the request names;
    * a date whose docs give a format (``yyyy-mm-dd``): the request's dates in that format;
    * a number: the numbers the request gives (``$200,000`` -> 200000; ``3%`` -> 0.03, or 3
      where the docs say it is a percentage);
    * a boolean the request mentions by name: on, unless negated ("without human impact").
    """
    t = v.get("type")
    enum = v.get("enum")
    items: dict[str, Any] = v["items"] if isinstance(v.get("items"), dict) else {}
    at = _grounding.name_mention(name, query, tool_words)
    if isinstance(enum, list):
        named = _grounding.named_values(enum, query)
        if named:
            return {**v, "enum": named}, True
        meant = _meant_value(enum, query, meaning, margin) if meaning is not None else None
        if meant is not None:
            return {**v, "enum": [meant]}, True
        return v, at >= 0
    if t == "array" and isinstance(items.get("enum"), list):
        named = _grounding.named_values(items["enum"], query)
        if named:
            return {"const": named}, True
        return v, at >= 0
    doc = str(raw.get("description", ""))
    if t == "string":
        when = _grounding.formatted_dates(query, doc)
        if when:  # a date the request gives, written as the doc asks
            return {**v, "enum": when}, True
        options = [o for o in _grounding.doc_options(doc) if grammar_safe(o)]
        named = _grounding.named_values(options, query) if options else []
        if named:
            return {**v, "enum": named}, True
        return v, at >= 0
    if t in ("integer", "number"):
        vals = _grounding.number_candidates(numbers_text, integer=t == "integer", doc=doc)
        return ({**v, "enum": vals} if vals else v), at >= 0
    if t == "array" and items.get("type") in ("integer", "number"):
        vals = _grounding.number_candidates(
            numbers_text, integer=items["type"] == "integer", doc=doc
        )
        if not vals:
            return v, at >= 0
        # a list of the request's numbers is no longer than the numbers it gives
        most = len(_grounding.numbers(numbers_text))
        return {**v, "items": {**items, "enum": vals}, "maxItems": most}, at >= 0
    if t == "boolean" and at >= 0:
        return {"const": _grounding.polarity(query, at)}, True
    return v, at >= 0


_URL = re.compile(r"\bhttps?://[^\s'\"<>]+", re.IGNORECASE)
_URL_WORDS = frozenset(["url", "uri", "link", "href", "endpoint"])


def _is_url_param(name: str, prop: dict[str, Any]) -> bool:
    """Whether a string parameter takes a web address (by its name or ``format``)."""
    if prop.get("type") not in (None, "string"):
        return False
    parts = set(re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", name.lower()))
    return bool(parts & _URL_WORDS) or prop.get("format") in ("uri", "url", "iri")


def argument_fit(spec: ToolSpec, query: str) -> float:
    """Return the share of ``spec``'s parameters the request gives a specific value for.

    Specific: a path for a path parameter, a web address for a URL parameter, a value of its
    enum or of its documented options, a date in its documented format, an option it turns
    on or off by name, a command line (or a file name) for a parameter that takes a command
    or a program; a number in the unit a parameter is named for counts half. Other numbers
    do not count (most requests hold some, whatever they ask).
    """
    schema = args_schema(spec)
    props: dict[str, Any] = schema.get("properties", {}) or {}
    if not props:
        return 0.0
    raw_props: dict[str, Any] = (spec.parameters or {}).get("properties", {}) or {}
    tool_words = set(_grounding.word_stems(spec.name))
    paths = path_values(query)
    found: set[str] = set()
    for k, v in props.items():
        if not isinstance(v, dict):
            continue
        raw = raw_props.get(k) if isinstance(raw_props.get(k), dict) else {}
        kind = _path_kind(k, raw or v)
        # as evidence for calling the tool, a phrase with a space is no path (it is often
        # what the request asks about); filled, a folder may be called 'My Documents'
        fitting = (
            [p for p in _paths_for(kind, paths) if " " not in p or _evidence.path_shaped(p)]
            if kind
            else []
        )
        if fitting:
            found.add(k)
            continue
        if _is_url_param(k, raw or v) and _URL.search(query):
            found.add(k)
            continue
        if v.get("type") in ("number", "integer", "array"):
            continue
        grounded, _ = _ground(k, v, raw or {}, query, query, tool_words)
        if grounded is not v and ("enum" in grounded or "const" in grounded):
            found.add(k)
    # a command line or a file name for a command/program, a number in the unit the
    # parameter is named for (:mod:`._evidence`), judged by each parameter's docs
    docs = {k: {**v, **raw_props[k]} if isinstance(raw_props.get(k), dict) else v
            for k, v in props.items() if isinstance(v, dict)}  # fmt: skip
    weight = sum(_evidence.hits(docs, query, found).values())
    return (len(found) + weight) / len(props)


def fill_schema(
    spec: ToolSpec, query: str, policy: Policy = DEFAULT_POLICY, context: str = ""
) -> dict[str, Any]:
    """Return the argument schema used for ``spec`` under ``policy``.

    With ``copy_strings`` each argument is grounded in the request (:func:`_ground`; name-
    like strings are copied from its words, paths from the names it gives; numbers may also
    come from ``context``, e.g. this turn's tool results). Optional arguments are kept when
    the request mentions them (``optional_args="mentioned"``), and a mentioned one must be
    filled: a small model otherwise stops before it.
    """
    schema = args_schema(spec)
    raw_props: dict[str, Any] = (spec.parameters or {}).get("properties", {}) or {}
    req = set(schema.get("required", []))
    mentioned: set[str] = set()
    path_args: set[str] = set()
    tool_words = set(_grounding.word_stems(spec.name))
    spans = copy_spans(query) if policy.copy_strings else []
    paths = path_values(query)
    meaning = _semantic.shipped() if policy.semantic and policy.enum_meaning > 0 else None
    near = _anchored(schema["properties"], query, tool_words) if policy.copy_strings else {}
    for k, v in list(schema["properties"].items()):
        if not isinstance(v, dict):
            continue
        raw = raw_props.get(k) if isinstance(raw_props.get(k), dict) else {}
        kind = _path_kind(k, raw or v)
        fitting = [p for p in _paths_for(kind, paths) if grammar_safe(p)] if kind else []
        if fitting and v.get("type") == "string":
            if policy.copy_strings:
                schema["properties"][k] = {**v, "enum": fitting}  # a path the request names
            path_args.add(k)
            mentioned.add(k)
            continue
        # one rule decides whether the request mentions an argument; copy_strings only
        # decides whether its values are narrowed to the request's
        grounded, said = _ground(
            k, v, raw or {}, query, f"{query}\n{context}", tool_words, meaning, policy.enum_meaning
        )
        if policy.copy_strings and grounded is v:
            if _prose(k, v):
                # words the request hands over ('water the plants'; "ping kim: ...")
                handed = [p for p in _grounding.payloads(query) if grammar_safe(p)]
                if handed:
                    grounded = {**v, "enum": handed}
            elif spans and _name_like(k, v):
                # the name next to the word for what it names ("the infra repo")
                grounded = {**v, "enum": near.get(k) or spans}
        if policy.copy_strings:
            schema["properties"][k] = grounded
        doc = str((raw or v).get("description", ""))
        if said or (
            v.get("type") in ("integer", "number") and _grounding.counted(k, doc, query, tool_words)
        ):
            mentioned.add(k)
    if policy.optional_args == "all":
        return schema
    keep = {
        k: v
        for k, v in schema["properties"].items()
        if k in req or (policy.optional_args == "mentioned" and k in mentioned)
    }
    schema["properties"] = keep
    # an optional argument the request mentions is filled, not left to the model
    named = [k for k in keep if k not in req]
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
    schema = fill_schema(spec, query, policy, context=_results_text(_turn_tail(messages)))
    if not schema["properties"]:
        return {}, Usage(0, 0)
    if prims.prefill and policy.fill_docs:  # the chosen tool alone, with its parameter docs
        prompt = tool_prompt(messages, [spec], param_docs=True)
        prefix = FILL_PREFIX.format(name=spec.name)
    elif prims.prefill:  # continue the choose step's prompt: its prefix is already evaluated
        prompt = tool_prompt(messages, tools or [spec])
        prefix = FILL_PREFIX.format(name=spec.name)
    else:  # a prompt about this one tool, with its parameter docs
        system = FILL_SYSTEM.format(tool=describe_tool(spec, param_docs=True))
        convo = plain_messages([m for m in messages if m.role != "system"])
        prompt, prefix = [{"role": "system", "content": system}, *convo], ""
    text, usage = await prims.complete(prompt, schema=schema, max_tokens=max_tokens, prefix=prefix)
    args = _parsed(text, spec)
    source = f"{query}\n{_results_text(_turn_tail(messages))}"
    again = _reused(args, schema, args_schema(spec), source) if policy.copy_strings else {}
    if again:
        # One value the request gives once went to two arguments: keep the first, and
        # fill the others again without it (the rest of the call is held fixed).
        props = {
            k: ({**v, "enum": _without(v["enum"], args[k])} if k in again else v)
            for k, v in schema["properties"].items()
        }
        props.update({k: {"const": args[k]} for k in args if k in props and k not in again})
        text, u = await prims.complete(
            prompt, schema={**schema, "properties": props}, max_tokens=max_tokens, prefix=prefix
        )
        usage = Usage(
            usage.prompt_tokens + u.prompt_tokens, usage.completion_tokens + u.completion_tokens
        )
        args = _parsed(text, spec)
    return _as_declared(args, args_schema(spec)), usage


def _without(choices: list[Any], used: Any) -> list[Any]:
    """Return ``choices`` minus ``used`` (and, for words, the spans that contain it)."""
    if isinstance(used, str):
        low = used.lower()
        rest = [c for c in choices if not (isinstance(c, str) and low in c.lower())]
    else:
        rest = [c for c in choices if c != used]
    return rest or [c for c in choices if c != used]


def _parsed(text: str, spec: ToolSpec) -> dict[str, Any]:
    try:
        args = loads_lenient(text)
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise ModelOutputError(
            f"the model's arguments for {spec.name} are not valid JSON: {text[:120]!r}",
            fix="retry, raise model.max_tokens, or use a larger model",
        )
    return args


def _occurrences(value: Any, text: str) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return sum(1 for g in _grounding.numbers(text) if value in g)
    if isinstance(value, str) and value.strip():
        return len(re.findall(r"(?<!\w)" + re.escape(value) + r"(?!\w)", text, re.IGNORECASE))
    return 0


def _reused(
    args: dict[str, Any], schema: dict[str, Any], declared: dict[str, Any], text: str
) -> set[str]:
    """Return the arguments that repeat a value the request gives fewer times than it was
    used (``county`` = the case number; ``dividends`` = the net income), all but the first.

    Only arguments whose choices were taken from the request count (not a tool's own enum).
    """
    own = declared.get("properties", {})
    props = schema.get("properties", {})
    copied = [
        k
        for k in args
        if isinstance(props.get(k), dict)
        and isinstance(props[k].get("enum"), list)
        and not (isinstance(own.get(k), dict) and "enum" in own[k])
    ]
    out: set[str] = set()
    seen: dict[str, list[str]] = {}
    for k in copied:
        seen.setdefault(json.dumps(args[k]), []).append(k)
    for key, names in seen.items():
        n = _occurrences(json.loads(key), text)
        if 0 < n < len(names):
            extra = names[n:]
            if all(len(props[k]["enum"]) > 1 for k in extra):
                out.update(extra)
    return out


def _as_declared(value: Any, schema: dict[str, Any]) -> Any:
    """Return ``value`` with whole numbers made floats where the schema declares ``number``
    (JSON writes 12.0 as 12; a tool typed ``list[float]`` should get floats)."""
    t = schema.get("type")
    if t == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_as_declared(v, schema["items"]) for v in value]
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        return {k: _as_declared(v, props[k]) if k in props else v for k, v in value.items()}
    return value


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
    async for piece in prims.stream(answer_messages(messages), settings):
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

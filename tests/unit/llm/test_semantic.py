"""The choose step's semantic signal (#22): meaning instead of shared words, argument fit,
and the model's preference weighed by its margin. A scripted embedder maps words to concepts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from bastion.llm import _semantic
from bastion.llm._constrained import Policy, argument_fit, choose
from bastion.messages import Message, ToolSpec
from tests.fakes.prims import Prims

# concept axes: words that mean the same thing share an axis
CONCEPTS = [
    {"remember", "forget", "todo", "to-do", "manage", "list"},
    {"light", "lights", "lamp", "dim", "bright"},
    {"joke", "funny", "laugh"},
]

TODO = ToolSpec(
    "reminder",
    "Manage the to-do list.",
    {"type": "object", "properties": {
        "action": {"type": "string", "enum": ["add", "remove"]},
        "item": {"type": "string"}}, "required": ["action", "item"]},
)  # fmt: skip
LIGHT = ToolSpec(
    "set_light",
    "Switch a room's lights on or off.",
    {"type": "object", "properties": {"room": {"type": "string"}}, "required": ["room"]},
)
FILES = ToolSpec(
    "list_files",
    "List the files and folders in a workspace directory.",
    {"type": "object", "properties": {"path": {"type": "string", "description": "Directory"},
                                      "recursive": {"type": "boolean"}}},
)  # fmt: skip


class Embedder:
    """Texts -> unit vectors over :data:`CONCEPTS` (plus a constant axis); counts calls."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for t in texts:
            self.seen.append(t)
            words = set(t.lower().replace(".", " ").replace(":", " ").replace("'", " ").split())
            v = [float(len(words & c)) for c in CONCEPTS] + [0.3]
            n = math.sqrt(sum(x * x for x in v))
            out.append([x / n for x in v])
        return out


@pytest.fixture
def embed(monkeypatch: pytest.MonkeyPatch) -> Embedder:
    e = Embedder()
    rel = _semantic.SemanticRelevance(e)
    monkeypatch.setattr(_semantic, "shipped", lambda: rel)
    return e


def user(text: str) -> list[Message]:
    return [Message("system", "be brief"), Message("user", text)]


NONE_FIRST = [-12.0, -3.0]  # a small model puts its mass on "none" whatever the request


async def test_a_request_that_shares_no_word_is_matched_by_meaning(embed: Embedder) -> None:
    ask = user("don't let me forget to buy cat food")  # no word of "reminder"/"to-do list"
    assert (await choose(Prims(scores=NONE_FIRST), ask, [TODO], "auto",
                         Policy(semantic=False)))[0] == "none"  # fmt: skip
    assert (await choose(Prims(scores=NONE_FIRST), ask, [TODO], "auto"))[0] == "reminder"
    # unrelated requests still get no call
    joke = user("tell me a joke about cats")
    assert (await choose(Prims(scores=NONE_FIRST), joke, [TODO], "auto"))[0] == "none"


async def test_tool_vectors_are_embedded_once(embed: Embedder) -> None:
    for q in ("remember the milk", "remember the eggs"):
        await choose(Prims(scores=NONE_FIRST), user(q), [TODO], "auto")
    tool_texts = [t for t in embed.seen if t.startswith("reminder:")]
    assert tool_texts == ["reminder: Manage the to-do list."]


def test_argument_fit_counts_specific_values_not_numbers() -> None:
    assert argument_fit(FILES, "show me the reports folder") == 0.5  # the path, not recursive
    assert argument_fit(FILES, "show me the reports folder, recursive") == 1.0
    assert argument_fit(TODO, "add milk") == 0.5  # the enum value "add"
    assert argument_fit(LIGHT, "set it to 30 or 40") == 0.0  # numbers are not evidence


async def test_a_flat_model_preference_does_not_outvote_meaning(embed: Embedder) -> None:
    ask = user("dim the lamp in the hall please")  # about lights, by meaning
    flat = Prims(scores=[-5.0, -5.01, -1.0])  # model: reminder by a hair
    assert (await choose(flat, ask, [TODO, LIGHT], "auto"))[0] == "set_light"
    # a model that clearly separates its options keeps a say: with equal meaning, its pick
    ask2 = user("what now")
    sure = Prims(scores=[-9.0, -0.1, -5.0])
    assert (await choose(sure, ask2, [TODO, LIGHT], "auto",
                         Policy(semantic_threshold=0.0)))[0] == "set_light"  # fmt: skip


FETCH = ToolSpec(
    "web_fetch",
    "Fetch a web page (http or https) and return its text.",
    {"type": "object", "properties": {"url": {"type": "string"},
                                      "max_chars": {"type": "integer"}}, "required": ["url"]},
)  # fmt: skip


def test_a_web_address_fits_a_url_parameter() -> None:
    assert argument_fit(FETCH, "what does http://localhost:8000/api/version return?") == 0.5
    assert argument_fit(FETCH, "what does the version endpoint return?") == 0.0

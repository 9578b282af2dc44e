"""The natural-request set (bench/data/natural) and its checker: every answer is a valid call,
the checker accepts the answers and rejects near misses, the split is fixed and balanced."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def natural() -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("natural", ROOT / "bench" / "natural.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "bench"))


def _as_call(name: str, answer: dict[str, list[Any]]) -> dict[str, Any] | None:
    """The first accepted value of each listed parameter (None if one is free text)."""
    args: dict[str, Any] = {}
    for k, vals in answer.items():
        v = vals[0]
        if isinstance(v, dict):
            v = " ".join(v["contains"])
        if v != "":
            args[k] = v
    return {name: args}


def test_set_size_languages_and_split(natural: Any) -> None:
    tools, items = natural.load("all")
    assert len(items) >= 300
    assert len({r["id"] for r in items}) == len(items)
    cats = {c: [r for r in items if r["category"] == c] for c in natural.CATEGORIES}
    assert all(len(v) >= 80 for v in cats.values())
    assert sum(r["lang"] != "en" for r in items) >= len(items) // 10
    dev, test = natural.load("dev")[1], natural.load("test")[1]
    assert len(dev) + len(test) == len(items)
    assert {r["id"] for r in dev}.isdisjoint({r["id"] for r in test})
    for c in natural.CATEGORIES:  # both halves hold every category
        assert sum(r["category"] == c for r in test) >= 30
        assert sum(r["category"] == c for r in dev) >= 30
    assert natural.half_of("single_001") == natural.half_of("single_001")


def test_every_answer_is_accepted_by_the_checker(natural: Any) -> None:
    tools, items = natural.load("all")
    for item in items:
        for t in item["tools"]:
            assert t in tools, item["id"]
        if item["category"] == "irrelevance":
            assert natural.check(tools, item, [])
            continue
        for alt in item["answer"]:
            ((name, answer),) = alt.items()
            assert name in item["tools"], item["id"]
            call = _as_call(name, answer)
            assert natural.check(tools, item, [call]), (item["id"], call)


def test_checker_rejects_near_misses(natural: Any) -> None:
    tools, items = natural.load("all")
    by_id = {r["id"]: r for r in items}
    light = by_id["single_059"]  # "it's too dark in the kitchen" -> set_light(kitchen, on)
    assert natural.check(tools, light, [{"set_light": {"room": "kitchen", "state": "on"}}])
    assert natural.check(tools, light, [{"set_light": {"room": "Kitchen", "state": "ON"}}])
    assert not natural.check(tools, light, [{"set_light": {"room": "kitchen", "state": "off"}}])
    assert not natural.check(tools, light, [{"set_light": {"room": "kitchen"}}])  # required
    assert not natural.check(  # a parameter the tool does not have
        tools, light, [{"set_light": {"room": "kitchen", "state": "on", "colour": "red"}}]
    )
    assert not natural.check(  # an optional parameter the request did not ask for
        tools, light, [{"set_light": {"room": "kitchen", "state": "on", "brightness": 40}}]
    )
    assert not natural.check(tools, light, [])  # no call
    two = [{"set_light": {"room": "kitchen", "state": "on"}}] * 2
    assert not natural.check(tools, light, two)  # exactly one call
    assert not natural.check(tools, by_id["irrelevance_001"], [{"list_files": {}}])
    lines = by_id["single_021"]  # "how many lines does server.log have" -> shell(wc ...)
    assert natural.check(tools, lines, [{"shell": {"command": "wc -l  server.log"}}])
    assert not natural.check(tools, lines, [{"shell": {"command": "cat server.log"}}])
    assert not natural.check(tools, lines, [{"python": {"code": "wc server.log"}}])
    files = by_id["single_001"]  # "what's in my workspace?" -> list_files() or defaults
    assert natural.check(tools, files, [{"list_files": {"path": "."}}])
    assert natural.check(tools, files, [{"list_files": {"recursive": False}}])
    assert not natural.check(tools, files, [{"list_files": {"recursive": True}}])
    assert not natural.check(tools, files, [{"list_files": {"max_entries": "200"}}])  # type

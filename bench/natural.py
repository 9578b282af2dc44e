"""Tool calling on requests as people write them: bastion's path vs llama-cpp-python's default.

The requests and tools are bastion's own natural-request set (``bench/data/natural/``, 311
requests written for this project; see its README for provenance, format and the split). Each
request offers one tool (``single``), several tools of which one fits (``multiple``) or tools
none of which fit (``irrelevance``). Both paths answer the same requests in the same run, with
the same code as ``bench/bfcl.py`` (the default path is ``chatml-function-calling``; bastion's
is the agent's first model step).

A request is right when the model makes exactly the expected call with acceptable arguments
(``single``/``multiple``) or no call (``irrelevance``); :func:`check` says what "acceptable"
means. The set is split into a development half and a test half by a hash of each id
(:func:`half_of`); report on ``--half test`` and tune only on ``--half dev``.

Usage::

    .venv/bin/python bench/natural.py --half test --workers 2
    .venv/bin/python bench/natural.py --half dev --paths bastion --show-failures
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import bfcl  # noqa: E402

from bastion.llm.embedded import EmbeddedModel, load_llama, shipped_model_path  # noqa: E402

DATA = ROOT / "bench" / "data" / "natural"
CATEGORIES = ("single", "multiple", "irrelevance")


def half_of(item_id: str) -> str:
    """``"dev"`` or ``"test"``: the first byte of the id's SHA-256, even -> dev."""
    return "dev" if hashlib.sha256(item_id.encode()).digest()[0] % 2 == 0 else "test"


def load(half: str = "all") -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Return the tools by name and the requests of ``half`` (``dev``, ``test`` or ``all``)."""
    tools = {t["name"]: t for t in json.loads((DATA / "tools.json").read_text())["tools"]}
    items = [json.loads(x) for x in (DATA / "requests.jsonl").read_text().splitlines() if x]
    if half != "all":
        items = [r for r in items if half_of(r["id"]) == half]
    return tools, items


# -- the checker ----------------------------------------------------------------------------

_DROP = re.compile(r"[\s,./\-_*^'\"]")


def _std(s: str) -> str:
    """BFCL's string standardisation: case and spacing/punctuation do not matter."""
    return _DROP.sub("", s.lower())


def _value_ok(value: Any, want: Any, ptype: str) -> bool:
    if isinstance(want, dict):  # {"contains": [...]}: free text (a command, a program)
        if not isinstance(value, str):
            return False
        text = " ".join(value.lower().split())
        return all(" ".join(s.lower().split()) in text for s in want["contains"])
    if ptype == "boolean":
        return isinstance(value, bool) and value == want
    if ptype in ("integer", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if ptype == "integer" and isinstance(value, float) and not value.is_integer():
            return False
        return math.isclose(float(value), float(want), rel_tol=1e-9, abs_tol=1e-9)
    return isinstance(value, str) and isinstance(want, str) and _std(value) == _std(want)


def _call_ok(tool: dict[str, Any], args: dict[str, Any], answer: dict[str, list[Any]]) -> bool:
    props = tool["parameters"]["properties"]
    required = tool["parameters"].get("required", [])
    if not isinstance(args, dict) or any(k not in props for k in args):
        return False
    if any(k not in args for k in required):
        return False
    for name, prop in props.items():
        accepted = answer.get(name)
        if accepted is None:  # not asked for: leave it out or give its default
            accepted = ["", prop["default"]] if "default" in prop else [""]
        if name not in args:
            if "" not in accepted:
                return False
            continue
        if not any(w != "" and _value_ok(args[name], w, prop["type"]) for w in accepted):
            return False
    return True


def check(
    tools: dict[str, dict[str, Any]], item: dict[str, Any], output: list[dict[str, Any]]
) -> bool:
    """True when ``output`` (a list of ``{name: arguments}``) is right for ``item``.

    ``irrelevance``: no call. Otherwise exactly one call, to the expected tool, whose
    arguments: name only parameters of the tool, include every required one, and for each
    parameter match one accepted value of one answer alternative (strings compared like
    BFCL's checker: case, spaces and ``,./-_*^'"`` ignored; ``{"contains": [...]}`` for free
    text such as a command: every part must occur; ``""`` in the list: it may be left out).
    A parameter the answer does not list may be left out or given its default.
    """
    if item["category"] == "irrelevance":
        return not output
    if len(output) != 1:
        return False
    ((name, args),) = output[0].items()
    for alt in item["answer"]:
        ((want_name, want_args),) = alt.items()
        if name == want_name and _call_ok(tools[name], args, want_args):
            return True
    return False


# -- running both paths ------------------------------------------------------------------------


def as_bfcl(tools: dict[str, dict[str, Any]], item: dict[str, Any]) -> dict[str, Any]:
    """The request in the shape bench/bfcl.py's runners take."""
    return {
        "function": [tools[n] for n in item["tools"]],
        "question": [[{"role": "user", "content": item["request"]}]],
    }


class _Worker:
    def __init__(self, threads: int, policy: str) -> None:
        self.inner = bfcl._Worker(threads, inner_cap=True, policy=policy)
        self.tools, items = load("all")
        self.items = {r["id"]: r for r in items}

    def run(self, path: str, item_id: str) -> dict[str, Any]:
        item = self.items[item_id]
        q = as_bfcl(self.tools, item)
        w = self.inner
        if path == "default":
            if w.default_llama is None:  # llama-cpp-python's own path (repacking as bastion
                # chooses: off on AMX CPUs, where llama.cpp's default crashes)
                w.default_llama = load_llama(
                    w.gguf, n_ctx=4096, n_threads=w.threads, chat_format="chatml-function-calling"
                )
                w.cap = bfcl._InnerCap(w.default_llama, bfcl.MAX_TOKENS)
            t0 = time.perf_counter()
            out = bfcl.run_default(w.default_llama, q)
        else:
            if w.bastion is None:
                w.bastion = EmbeddedModel(
                    load_llama(w.gguf, n_ctx=4096, n_threads=w.threads), policy=w.policy
                )
            t0 = time.perf_counter()
            out = asyncio.run(bfcl.run_bastion(w.bastion, q, w.system))
        secs = time.perf_counter() - t0
        return {
            "path": path,
            "category": item["category"],
            "id": item_id,
            "lang": item["lang"],
            "ok": check(self.tools, item, out),
            "output": out,
            "seconds": round(secs, 3),
        }


_W: _Worker | None = None


def _init(threads: int, policy: str) -> None:
    global _W
    _W = _Worker(threads, policy)


def _task(t: tuple[str, str]) -> dict[str, Any]:
    assert _W is not None
    return _W.run(*t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half", choices=("dev", "test", "all"), default="test")
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--paths", default="default,bastion")
    ap.add_argument("--limit", type=int, default=0, help="requests per category (0 = all)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--policy", default="", help="bastion path: Policy overrides (dev only)")
    ap.add_argument("--out", type=Path, help="JSONL of per-request results (overwritten)")
    ap.add_argument("--show-failures", action="store_true")
    args = ap.parse_args()

    cats = args.categories.split(",")
    paths = args.paths.split(",")
    _, items = load(args.half)
    per_cat = {c: [r["id"] for r in items if r["category"] == c] for c in cats}
    if args.limit:
        per_cat = {c: ids[: args.limit] for c, ids in per_cat.items()}
    depth = max(len(v) for v in per_cat.values())
    tasks = [
        (p, per_cat[c][i]) for i in range(depth) for c in cats if i < len(per_cat[c]) for p in paths
    ]
    workers = max(1, args.workers)
    threads = args.threads or max(1, (os.cpu_count() or 2) // workers)
    print(
        f"natural requests, {args.half} half ({sum(map(len, per_cat.values()))} requests);"
        f" model {shipped_model_path().name}; {workers} worker(s) x {threads} thread(s)",
        flush=True,
    )
    records: list[dict[str, Any]] = []
    if args.out:
        args.out.write_text("")
    for rec in bfcl.pool_results(_task, tasks, workers, _init, (threads, args.policy)):
        records.append(rec)
        if args.out:  # written as they come: a run stopped early keeps its records
            with args.out.open("a") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if len(records) % 20 == 0:
            print(f"  {len(records)}/{len(tasks)}", flush=True)
    print(bfcl._table(records, cats, paths))
    other = [r for r in records if r["lang"] != "en"]
    for p in paths:
        rs = [r for r in other if r["path"] == p]
        if rs:
            print(f"{p}: other languages {sum(r['ok'] for r in rs)}/{len(rs)}")
    if args.show_failures:
        tools, all_items = load("all")
        by_id = {r["id"]: r for r in all_items}
        for r in sorted(records, key=lambda r: (r["path"], r["id"])):
            if not r["ok"]:
                want = by_id[r["id"]]["answer"]
                print(f"{r['path']:8} {r['id']}: {by_id[r['id']]['request']!r}\n"
                      f"          got {r['output']} want {want[:1]}")


if __name__ == "__main__":
    main()

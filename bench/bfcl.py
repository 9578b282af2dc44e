"""BFCL tool-calling accuracy on the shipped model: llama-cpp-python's default path vs bastion's.

Data and the AST checker come from the ``bfcl-eval`` wheel (installed ``--no-deps`` by
scripts/test-assets.sh); nothing is installed at run time. Each category is split by question
id into a development half (even ids) and an evaluation half (odd ids); the split is recorded
in bench/bfcl_split.json and checked on every run. Both paths answer the same questions in the
same run:

* ``default``: ``Llama(chat_format="chatml-function-calling")`` + ``create_chat_completion(
  tools=..., tool_choice="auto")`` -- what a llama-cpp-python user gets.
* ``bastion``: :class:`bastion.llm.embedded.EmbeddedModel.chat` with the agent's system prompt,
  i.e. the first model step of ``bastion ask`` (constrained choose / fill / answer).

Usage::

    .venv/bin/python bench/bfcl.py --half eval --limit 50
    .venv/bin/python bench/bfcl.py --half dev --paths bastion --limit 60
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import re
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from bastion.config.model import AgentConfig  # noqa: E402
from bastion.llm._schema import normalize_schema  # noqa: E402
from bastion.llm.embedded import EmbeddedModel, load_llama, shipped_model_path  # noqa: E402
from bastion.llm.messages import ChatSettings, Message, ToolCallEvent, ToolSpec  # noqa: E402

CATEGORIES = ("simple_python", "multiple", "irrelevance")
SPLIT_FILE = ROOT / "bench" / "bfcl_split.json"
SPLIT_RULE = "per category, question id number even -> dev, odd -> eval"


def bfcl_dir() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bfcl-eval is not installed: run scripts/test-assets.sh .venv/bin/python")
    return Path(next(iter(spec.submodule_search_locations)))


def load_checker() -> Any:
    """Import BFCL's own AST checker without the wheel's heavy optional dependencies.

    ``ast_checker`` imports the model registry only to ask whether a model name has dots
    replaced by underscores; we register bastion as a model that keeps names verbatim.
    """
    name = "bfcl_eval.constants.model_config"
    if name not in sys.modules:
        shim = types.ModuleType(name)

        class _Cfg:
            underscore_to_dot = False

        class _Map(dict[str, Any]):
            def __missing__(self, key: str) -> Any:
                return _Cfg()

        shim.MODEL_CONFIG_MAPPING = _Map()  # type: ignore[attr-defined]
        sys.modules[name] = shim
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    def check(category: str, functions: Any, output: list[dict[str, Any]], answer: Any) -> bool:
        if category == "irrelevance":
            return not output
        if not output:
            return False
        res = ast_checker(functions, output, answer, Language.PYTHON, category, "bastion")
        return bool(res["valid"])

    return check


def _num(qid: str) -> int:
    m = re.search(r"(\d+)$", qid)
    assert m, qid
    return int(m.group(1))


def load_category(cat: str) -> list[dict[str, Any]]:
    base = bfcl_dir() / "data"
    questions = [
        json.loads(x) for x in (base / f"BFCL_v4_{cat}.json").read_text().splitlines() if x
    ]
    answers: dict[str, Any] = {}
    ans_file = base / "possible_answer" / f"BFCL_v4_{cat}.json"
    if ans_file.exists():
        for line in ans_file.read_text().splitlines():
            if line:
                a = json.loads(line)
                answers[a["id"]] = a["ground_truth"]
    for q in questions:
        q["answer"] = answers.get(q["id"])
    return questions


def make_split() -> dict[str, Any]:
    split: dict[str, Any] = {
        "rule": SPLIT_RULE,
        "source": "bfcl-eval 2026.3.23",
        "dev": {},
        "eval": {},
    }
    for cat in CATEGORIES:
        ids = [q["id"] for q in load_category(cat)]
        split["dev"][cat] = [i for i in ids if _num(i) % 2 == 0]
        split["eval"][cat] = [i for i in ids if _num(i) % 2 == 1]
    return split


def specs_of(q: dict[str, Any]) -> list[ToolSpec]:
    return [
        ToolSpec(f["name"], f.get("description", ""), normalize_schema(f.get("parameters", {})))
        for f in q["function"]
    ]


def user_text(q: dict[str, Any]) -> list[dict[str, str]]:
    return [m for m in q["question"][0] if m["role"] in ("user", "system")]


def run_default(llama: Any, q: dict[str, Any]) -> list[dict[str, Any]]:
    tools = [s.to_openai() for s in specs_of(q)]
    try:
        resp = llama.create_chat_completion(
            messages=user_text(q), tools=tools, tool_choice="auto", temperature=0.0, max_tokens=256
        )
    except Exception:  # the default path can fail on odd schemas: count as no call
        return []
    out = []
    for tc in resp["choices"][0]["message"].get("tool_calls") or []:
        try:
            args = json.loads(tc["function"]["arguments"] or "{}")
        except ValueError:
            continue
        out.append({tc["function"]["name"]: args})
    return out


async def run_bastion(model: EmbeddedModel, q: dict[str, Any], system: str) -> list[dict[str, Any]]:
    msgs = [Message("system", system)] + [Message(m["role"], m["content"]) for m in user_text(q)]  # type: ignore[arg-type]
    out = []
    settings = ChatSettings(temperature=0.0, max_tokens=256)
    async for ev in model.chat(msgs, specs_of(q), settings=settings):
        if isinstance(ev, ToolCallEvent):
            out.append({ev.call.name: ev.call.arguments})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half", choices=("dev", "eval"), default="eval")
    ap.add_argument("--limit", type=int, default=0, help="questions per category (0 = whole half)")
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--paths", default="default,bastion")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-split", action="store_true", help="(re)write bench/bfcl_split.json")
    ap.add_argument("--show-failures", action="store_true")
    args = ap.parse_args()

    split = make_split()
    if args.write_split:
        SPLIT_FILE.write_text(json.dumps(split, indent=1) + "\n")
        print(f"wrote {SPLIT_FILE}")
        return
    recorded = json.loads(SPLIT_FILE.read_text())
    if recorded["dev"] != split["dev"] or recorded["eval"] != split["eval"]:
        sys.exit("bench/bfcl_split.json does not match the installed bfcl-eval data")

    check = load_checker()
    paths = args.paths.split(",")
    gguf = shipped_model_path()
    default_llama = bastion_model = None
    if "default" in paths:
        import llama_cpp

        default_llama = llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=4096,
            n_threads=args.threads,
            verbose=False,
            chat_format="chatml-function-calling",
        )
    if "bastion" in paths:
        bastion_model = EmbeddedModel(load_llama(gguf, n_ctx=4096, n_threads=args.threads))
    system = AgentConfig().system_prompt

    print(f"BFCL {args.half} half ({SPLIT_RULE}); model {gguf.name}; temperature 0")
    results: dict[str, dict[str, list[float]]] = {p: {} for p in paths}
    times: dict[str, float] = {p: 0.0 for p in paths}
    count = 0
    for cat in args.categories.split(","):
        wanted = set(recorded[args.half][cat])
        qs = [q for q in load_category(cat) if q["id"] in wanted]
        qs.sort(key=lambda q: _num(q["id"]))
        if args.limit:
            qs = qs[: args.limit]
        for p in paths:
            results[p][cat] = []
        for q in qs:
            count += 1
            for p in paths:
                t0 = time.perf_counter()
                if p == "default":
                    out = run_default(default_llama, q)
                else:
                    out = asyncio.run(run_bastion(bastion_model, q, system))  # type: ignore[arg-type]
                times[p] += time.perf_counter() - t0
                ok = check(cat, q["function"], out, q["answer"])
                results[p][cat].append(1.0 if ok else 0.0)
                if args.show_failures and not ok and p == "bastion":
                    print(
                        f"  FAIL {q['id']}: {user_text(q)[-1]['content'][:90]!r} -> {out} "
                        f"want {q['answer']}"
                    )
        line = "  ".join(
            f"{p} {100 * sum(results[p][cat]) / max(1, len(results[p][cat])):5.1f}%" for p in paths
        )
        print(f"{cat:14s} n={len(qs):3d}  {line}", flush=True)
    means = {
        p: sum(100 * sum(v) / max(1, len(v)) for v in results[p].values()) / len(results[p])
        for p in paths
    }
    print("mean           " + "  ".join(f"{p} {means[p]:5.1f}%" for p in paths))
    if "default" in means and "bastion" in means and means["default"]:
        print(f"ratio bastion/default: {means['bastion'] / means['default']:.2f}")
    for p in paths:
        print(f"{p}: {times[p] / max(1, count):.2f} s/question")


async def _features(
    model: EmbeddedModel, q: dict[str, Any], cat: str, system: str, check: Any
) -> dict[str, Any]:
    """Development aid: the decision's inputs and per-policy fill results for one question."""
    from bastion.llm import _constrained as C
    from bastion.llm import _relevance

    specs = specs_of(q)
    msgs = [Message("system", system)] + [Message(m["role"], m["content"]) for m in user_text(q)]  # type: ignore[arg-type]
    names = [s.name for s in specs]
    prompt = C.tool_prompt(msgs, specs)
    scores = await model.score(prompt, C.CHOOSE_PREFIX, [*names, "none"])
    query = user_text(q)[-1]["content"]
    feat: dict[str, Any] = {
        "id": q["id"],
        "cat": cat,
        "names": names,
        "scores": scores,
        "lex": _relevance.best(query, specs),
        "gold": None,
        "fill_ok": {},
    }
    if cat != "irrelevance":
        gold = next(iter(q["answer"][0]))
        feat["gold"] = gold
        spec = next(s for s in specs if s.name == gold)
        for mode in ("all", "mentioned", "none"):
            try:
                args, _ = await C.fill(model, msgs, spec, specs, C.Policy(optional_args=mode))
            except Exception:
                args = None
            feat["fill_ok"][mode] = bool(
                args is not None and check(cat, q["function"], [{gold: args}], q["answer"])
            )
    return feat


def dump_features(half: str, limit: int, threads: int, out: Path, cats: list[str]) -> None:
    check = load_checker()
    model = EmbeddedModel(load_llama(shipped_model_path(), n_ctx=4096, n_threads=threads))
    system = AgentConfig().system_prompt
    recorded = json.loads(SPLIT_FILE.read_text())
    with out.open("a") as fh:
        for i in range(limit):
            for cat in cats:
                wanted = set(recorded[half][cat])
                qs = sorted(
                    (q for q in load_category(cat) if q["id"] in wanted),
                    key=lambda q: _num(q["id"]),
                )
                if i < len(qs):
                    fh.write(
                        json.dumps(asyncio.run(_features(model, qs[i], cat, system, check))) + "\n"
                    )
                    fh.flush()


if __name__ == "__main__":
    if "--features" in sys.argv:  # --features OUT HALF LIMIT THREADS CATS
        i = sys.argv.index("--features")
        out, half, lim, thr, cats = sys.argv[i + 1 : i + 6]
        dump_features(half, int(lim), int(thr), Path(out), cats.split(","))
    else:
        main()

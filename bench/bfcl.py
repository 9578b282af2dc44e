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
import dataclasses
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
from bastion.errors import ModelOutputError  # noqa: E402
from bastion.llm._constrained import DEFAULT_POLICY, Policy  # noqa: E402
from bastion.llm._schema import normalize_schema  # noqa: E402
from bastion.llm.base import Model  # noqa: E402
from bastion.llm.embedded import (  # noqa: E402
    TEMPLATES,
    EmbeddedModel,
    load_llama,
    shipped_model_path,
)
from bastion.messages import ChatSettings, Message, ToolCallEvent, ToolSpec  # noqa: E402

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
    """The question's functions as tool specs, as an API caller sends them: BFCL's Python
    type names (``dict``, ``float``) mapped to JSON Schema, parameter docs kept."""
    return [
        ToolSpec(
            f["name"],
            f.get("description", ""),
            normalize_schema(f.get("parameters", {}), docs=True),
        )
        for f in q["function"]
    ]


def user_text(q: dict[str, Any]) -> list[dict[str, str]]:
    return [m for m in q["question"][0] if m["role"] in ("user", "system")]


class _InnerCap:
    """Apply the caller's ``max_tokens`` to llama-cpp-python's inner completions.

    ``chatml-function-calling`` passes ``max_tokens=None`` to the completions that pick the
    function and write its arguments (llama-cpp-python 0.3.x), so a run-away argument list
    generates until the context is full (minutes per question on this CPU) and then fails to
    parse. Capping those completions at the requested ``max_tokens`` turns such a run-away
    into the same unparseable, uncalled result in seconds. It can differ from the uncapped
    run only when arguments longer than ``max_tokens`` would close validly before ``n_ctx``;
    no BFCL answer is that long, and on ``irrelevance`` it can only help the default path.
    ``hits`` counts the completions that stopped at the cap (reported per question).
    """

    def __init__(self, llama: Any, max_tokens: int) -> None:
        self.orig = llama.create_completion
        self.max_tokens = max_tokens
        self.hits = 0
        llama.create_completion = self

    def __call__(self, *a: Any, **kw: Any) -> Any:
        if kw.get("max_tokens", 0) is None:
            kw["max_tokens"] = self.max_tokens
        res = self.orig(*a, **kw)
        if not kw.get("stream") and res["choices"][0].get("finish_reason") == "length":
            self.hits += 1
        return res


MAX_TOKENS = 256


def run_default(llama: Any, q: dict[str, Any]) -> list[dict[str, Any]]:
    tools = [s.to_openai() for s in specs_of(q)]
    try:
        resp = llama.create_chat_completion(
            messages=user_text(q),
            tools=tools,
            tool_choice="auto",
            temperature=0.0,
            max_tokens=MAX_TOKENS,
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


async def run_bastion(model: Model, q: dict[str, Any], system: str) -> list[dict[str, Any]]:
    msgs = [Message("system", system)] + [Message(m["role"], m["content"]) for m in user_text(q)]  # type: ignore[arg-type]
    out = []
    settings = ChatSettings(temperature=0.0, max_tokens=MAX_TOKENS)
    try:
        async for ev in model.chat(msgs, specs_of(q), settings=settings):
            if isinstance(ev, ToolCallEvent):
                out.append({ev.call.name: ev.call.arguments})
    except ModelOutputError:
        # arguments cut off at max_tokens: the agent retries (same greedy result) and ends
        # the turn with an error, so no call is made -- scored like the default path's
        # unparseable arguments
        return []
    return out


# -- one run: tasks, workers, the results file ------------------------------------------------


def plan(half: str, cats: list[str], limit: int, paths: list[str]) -> list[tuple[str, str, str]]:
    """Return the (path, category, question id) tasks in a deterministic, interleaved order.

    Question i of every category (and both paths) comes before question i + 1 of any, so a
    run stopped early still holds the same first-k prefix of each category for both paths.
    """
    recorded = json.loads(SPLIT_FILE.read_text())
    per_cat: dict[str, list[str]] = {}
    for cat in cats:
        ids = sorted(recorded[half][cat], key=_num)
        per_cat[cat] = ids[:limit] if limit else ids
    depth = max((len(v) for v in per_cat.values()), default=0)
    tasks: list[tuple[str, str, str]] = []
    for i in range(depth):
        for cat in cats:
            if i < len(per_cat[cat]):
                tasks.extend((p, cat, per_cat[cat][i]) for p in paths)
    return tasks


class _Worker:
    """Answers tasks in one process; models are loaded on first use, once."""

    def __init__(
        self, threads: int, inner_cap: bool, gguf: str = "", template: str = "", policy: str = ""
    ) -> None:
        self.policy = parse_policy(policy)
        self.gguf = Path(gguf) if gguf else shipped_model_path()
        self.template = template
        self.threads = threads
        self.inner_cap = inner_cap
        self.default_llama: Any = None
        self.cap: _InnerCap | None = None
        self.bastion: EmbeddedModel | None = None
        self.system = AgentConfig().system_prompt
        self.check = load_checker()
        self.questions: dict[str, dict[str, Any]] = {}

    def question(self, cat: str, qid: str) -> dict[str, Any]:
        if cat not in self.questions:
            self.questions.update({f"{cat}/{q['id']}": q for q in load_category(cat)})
            self.questions[cat] = {}
        return self.questions[f"{cat}/{qid}"]

    def run(self, path: str, cat: str, qid: str) -> dict[str, Any]:
        q = self.question(cat, qid)
        gguf = self.gguf
        hits0 = 0
        if path == "default":
            if self.default_llama is None:  # llama-cpp-python's own path (repacking as
                # bastion chooses: off on AMX CPUs, where llama.cpp's default crashes)
                self.default_llama = load_llama(
                    gguf, n_ctx=4096, n_threads=self.threads, chat_format="chatml-function-calling"
                )
                if self.inner_cap:
                    self.cap = _InnerCap(self.default_llama, MAX_TOKENS)
            hits0 = self.cap.hits if self.cap else 0
            t0 = time.perf_counter()
            out = run_default(self.default_llama, q)
        else:
            if self.bastion is None:
                tpl, end = TEMPLATES[self.template] if self.template else (None, None)
                self.bastion = EmbeddedModel(
                    load_llama(gguf, n_ctx=4096, n_threads=self.threads),
                    chat_template=tpl,
                    end_of_turn=end,
                    policy=self.policy,
                )
            t0 = time.perf_counter()
            out = asyncio.run(run_bastion(self.bastion, q, self.system))
        secs = time.perf_counter() - t0
        ok = bool(self.check(cat, q["function"], out, q["answer"]))
        rec: dict[str, Any] = {
            "path": path,
            "category": cat,
            "id": qid,
            "ok": ok,
            "output": out,
            "seconds": round(secs, 3),
        }
        if path == "default" and self.cap is not None:
            rec["capped_completions"] = self.cap.hits - hits0
        return rec


_WORKER: _Worker | None = None


def pool_results(
    fn: Any, tasks: list[Any], workers: int, initializer: Any, initargs: tuple[Any, ...]
) -> Any:
    """Yield ``fn(task)`` for every task from ``workers`` spawned processes, as they finish.

    A worker that dies (a native crash in llama.cpp) ends the run with one line naming the
    signal, instead of the silent hang of ``multiprocessing.Pool`` (which replaces the dead
    worker and waits forever for its task); what was yielded before stays written.
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(
        workers, mp_context=mp.get_context("spawn"), initializer=initializer, initargs=initargs
    ) as pool:
        try:
            for fut in cf.as_completed([pool.submit(fn, t) for t in tasks]):
                yield fut.result()
        except cf.process.BrokenProcessPool:
            # from None: the pool's own traceback says nothing more than this line
            raise SystemExit(
                "error: a benchmark worker process died (a native crash in the model?); "
                "the records written so far are kept (fix: run with --workers 1 to see which "
                "question, and check `bastion doctor`)"
            ) from None


def parse_policy(spec: str) -> Policy:
    """``"key=value,key=value"`` -> a :class:`Policy` (development experiments on dev)."""
    if not spec:
        return DEFAULT_POLICY
    kw: dict[str, Any] = {}
    for item in spec.split(","):
        key, _, raw = item.partition("=")
        default = getattr(DEFAULT_POLICY, key)
        if isinstance(default, bool):
            kw[key] = raw.lower() in ("1", "true", "yes")
        else:
            kw[key] = type(default)(raw)
    return dataclasses.replace(DEFAULT_POLICY, **kw)


def _init_worker(
    threads: int, inner_cap: bool, gguf: str = "", template: str = "", policy: str = ""
) -> None:
    global _WORKER
    _WORKER = _Worker(threads, inner_cap, gguf, template, policy)


def _run_task(task: tuple[str, str, str]) -> dict[str, Any]:
    assert _WORKER is not None
    return _WORKER.run(*task)


def _table(records: list[dict[str, Any]], cats: list[str], paths: list[str]) -> str:
    lines = [
        "| category | n | " + " | ".join(f"{p} acc | {p} s/q" for p in paths) + " | ratio |",
        "|---|---|" + "---|---|" * len(paths) + "---|",
    ]
    means: dict[str, list[float]] = {p: [] for p in paths}
    secs: dict[str, list[float]] = {p: [] for p in paths}
    for cat in cats:
        cells = []
        accs = {}
        ns = set()
        for p in paths:
            rs = [r for r in records if r["path"] == p and r["category"] == cat]
            ns.add(len(rs))
            acc = 100 * sum(r["ok"] for r in rs) / max(1, len(rs))
            accs[p] = acc
            means[p].append(acc)
            secs[p].extend(r["seconds"] for r in rs)
            s = sum(r["seconds"] for r in rs) / max(1, len(rs))
            cells.append(f"{acc:.1f}% | {s:.2f}")
        n = "/".join(str(x) for x in sorted(ns))
        ratio = (
            f"{accs['bastion'] / accs['default']:.2f}"
            if "default" in accs and "bastion" in accs and accs["default"]
            else "-"
        )
        lines.append(f"| {cat} | {n} | " + " | ".join(cells) + f" | {ratio} |")
    mean = {p: sum(v) / max(1, len(v)) for p, v in means.items()}
    cells = [f"**{mean[p]:.1f}%** | {sum(secs[p]) / max(1, len(secs[p])):.2f}" for p in paths]
    ratio = (
        f"**{mean['bastion'] / mean['default']:.2f}**"
        if "default" in mean and "bastion" in mean and mean["default"]
        else "-"
    )
    lines.append("| **mean** | | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half", choices=("dev", "eval"), default="eval")
    ap.add_argument("--limit", type=int, default=0, help="questions per category (0 = whole half)")
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--paths", default="default,bastion")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (tasks interleave)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads per worker (0: auto)")
    ap.add_argument("--out", type=Path, help="JSONL of per-question results (appended)")
    ap.add_argument("--resume", action="store_true", help="skip tasks already in --out")
    ap.add_argument(
        "--no-inner-cap",
        action="store_true",
        help="let the default path's inner completions ignore max_tokens (library behaviour)",
    )
    ap.add_argument("--model", default="", help="another GGUF file (default: the shipped one)")
    ap.add_argument(
        "--chat-template",
        default="",
        choices=("", *TEMPLATES),
        help="bastion path: template for a GGUF without one (the default path is ChatML)",
    )
    ap.add_argument(
        "--policy",
        default="",
        help="bastion path: Policy overrides for dev experiments, e.g. fill_docs=true",
    )
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

    import os

    paths = args.paths.split(",")
    cats = args.categories.split(",")
    workers = max(1, args.workers)
    threads = args.threads or max(1, (os.cpu_count() or 2) // workers)
    tasks = plan(args.half, cats, args.limit, paths)
    gguf_name = Path(args.model).name if args.model else shipped_model_path().name
    records: list[dict[str, Any]] = []
    if args.out and args.resume and args.out.exists():
        wanted = {(p, c, i) for p, c, i in tasks}
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            if "path" in r and (r["path"], r["category"], r["id"]) in wanted:
                records.append(r)
        done = {(r["path"], r["category"], r["id"]) for r in records}
        tasks = [t for t in tasks if t not in done]
    print(
        f"BFCL {args.half} half ({SPLIT_RULE}); model {gguf_name}; temperature 0;"
        f" max_tokens {MAX_TOKENS}; {workers} worker(s) x {threads} thread(s);"
        f" default inner cap {'off' if args.no_inner_cap else 'on'};"
        f" {len(records)} results resumed, {len(tasks)} tasks to run",
        flush=True,
    )
    fh = args.out.open("a") if args.out else None
    if fh:
        import platform
        import subprocess
        from importlib.metadata import version

        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        env = {
            "commit": commit,
            "llama_cpp_python": version("llama_cpp_python"),
            "bfcl_eval": version("bfcl_eval"),
            "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        print(f"run: {env}", flush=True)
        head = {"run": vars(args) | {"out": str(args.out)}, "env": env, "tasks": len(tasks)}
        fh.write(json.dumps(head) + "\n")
    t_start = time.perf_counter()

    def take(rec: dict[str, Any]) -> None:
        records.append(rec)
        if fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
        if args.show_failures and not rec["ok"]:
            print(f"  FAIL {rec['path']} {rec['id']}: {rec['output']}", flush=True)
        n = len(records)
        if n % 20 == 0:
            el = time.perf_counter() - t_start
            print(f"  {n} results, {el:.0f} s elapsed", flush=True)

    if workers == 1:
        _init_worker(threads, not args.no_inner_cap, args.model, args.chat_template, args.policy)
        for t in tasks:
            take(_run_task(t))
    else:
        initargs = (threads, not args.no_inner_cap, args.model, args.chat_template, args.policy)
        for rec in pool_results(_run_task, tasks, workers, _init_worker, initargs):
            take(rec)
    if fh:
        fh.close()
    print(_table(records, cats, paths))
    if "default" in paths:
        capped = sum(1 for r in records if r.get("capped_completions"))
        print(f"default-path questions with a completion stopped at the inner cap: {capped}")


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

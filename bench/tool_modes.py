"""The same GGUF embedded vs behind ``python -m llama_cpp.server``: which tools does it call?

#16 item 4. Both paths answer the same natural requests to bastion's own tools (the agent's
system prompt and tool specs, exactly what ``bastion ask`` offers) in the same run, one
request alternating between the paths so machine load hits both alike:

* ``embedded``: :class:`bastion.llm.embedded.EmbeddedModel` in this process (scores the tool
  choice over a closed set of options, continues its own reply for the arguments).
* ``http``: ``model.backend: openai`` at a local ``llama_cpp.server`` serving the same file,
  constrained steps over HTTP (``native_tools`` off, the README's "Another model server").
  The server gives no scores for the tool choice, so the model generates its pick.
* ``http-before``: the same, as before ``Policy.trust_generated_pick`` was off by default (a
  generated pick alone could call a tool the request's words point nowhere near).

Only the first model step is measured (the decision: which tool, which arguments, or a plain
answer); no tool runs. Prints one row per request, then accuracy and seconds per request.

Usage::

    .venv/bin/python bench/tool_modes.py              # 24 requests, all three paths
    .venv/bin/python bench/tool_modes.py --limit 4 --paths http
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from bastion.config.model import AgentConfig  # noqa: E402
from bastion.llm.base import Model  # noqa: E402
from bastion.messages import ChatSettings, Message, TextDelta, ToolCallEvent  # noqa: E402

# (request, expected tools (empty: a plain answer), expected arguments (subset))
CASES: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    ("How many files are in my workspace?", ("list_files", "shell"), {}),
    ("hi", (), {}),
    ("What's in notes.txt?", ("read_file",), {"path": "notes.txt"}),
    ("Show me the contents of the file todo.md", ("read_file",), {"path": "todo.md"}),
    ("List the files in the docs folder", ("list_files",), {"path": "docs"}),
    ("Write 'buy milk' to a file called shopping.txt", ("write_file",), {"path": "shopping.txt"}),
    ("Save the text hello world into greeting.txt", ("write_file",), {"path": "greeting.txt"}),
    ("Run ls -la", ("shell",), {}),
    ("What is the output of the command uname -a?", ("shell",), {}),
    ("Use python to compute 2**100", ("python",), {}),
    ("Calculate the sum of the numbers 1 to 1000 with a Python program", ("python",), {}),
    ("Run this JavaScript: console.log(6*7)", ("node",), {}),
    ("Fetch https://example.com and tell me what it says", ("web_fetch",),
     {"url": "https://example.com"}),
    ("Download the page at http://127.0.0.1:8000/status", ("web_fetch",),
     {"url": "http://127.0.0.1:8000/status"}),
    ("thanks!", (), {}),
    ("What is the capital of France?", (), {}),
    ("Tell me a joke", (), {}),
    ("Good morning, how are you?", (), {}),
    ("Which files are in the src folder?", ("list_files",), {"path": "src"}),
    ("Read README.md and summarise it", ("read_file",), {"path": "README.md"}),
    ("Append a line 'done' to log.txt", ("write_file",), {"path": "log.txt"}),
    ("How much disk space is free? Use df -h", ("shell",), {}),
    ("What does the file config.yaml contain?", ("read_file",), {"path": "config.yaml"}),
    ("Who are you?", (), {}),
]


@dataclass
class Outcome:
    """One path's first step on one request."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    text: str = ""
    seconds: float = 0.0
    error: str = ""

    def label(self) -> str:
        if self.error:
            return f"error: {self.error[:40]}"
        if self.calls:
            name, args = self.calls[0]
            inner = ", ".join(f"{k}={v!r}"[:40] for k, v in args.items())
            return f"{name}({inner})"
        return f"answer: {' '.join(self.text.split())[:30]!r}"


def tool_ok(case: tuple[str, tuple[str, ...], dict[str, Any]], out: Outcome) -> bool:
    """The right tool (or a plain answer when none is needed)."""
    _, tools, _ = case
    if out.error:
        return False
    if not tools:
        return not out.calls
    return bool(out.calls) and out.calls[0][0] in tools


def args_ok(case: tuple[str, tuple[str, ...], dict[str, Any]], out: Outcome) -> bool:
    """The right tool with the expected arguments."""
    if not tool_ok(case, out):
        return False
    if not out.calls:
        return True
    got = out.calls[0][1]
    return all(str(got.get(k, "")).strip("/ ") == v.strip("/ ") for k, v in case[2].items())


async def first_step(model: Model, specs: list[Any], system: str, text: str) -> Outcome:
    """Run the agent's first model step and note what it decided."""
    out = Outcome()
    t0 = time.perf_counter()
    try:
        async for ev in model.chat([Message("system", system), Message("user", text)], specs,
                                   settings=ChatSettings(temperature=0.0, max_tokens=64)):
            if isinstance(ev, ToolCallEvent):
                out.calls.append((ev.call.name, dict(ev.call.arguments)))
            elif isinstance(ev, TextDelta):
                out.text += ev.text
    except Exception as exc:  # a bench row, not a crash
        out.error = f"{type(exc).__name__}: {exc}"
    out.seconds = time.perf_counter() - t0
    return out


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(gguf: Path, threads: int) -> Iterator[str]:
    """``python -m llama_cpp.server`` on loopback serving ``gguf`` (the README's command)."""
    import httpx

    port = _port()
    url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bastion.llm.server_main", "--model", str(gguf), "--host",
             "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads),
             "--n_threads_batch", str(threads), "--verbose", "false"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    sys.exit("llama_cpp.server exited:\n" + log.read().decode()[-2000:])
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    sys.exit("llama_cpp.server did not start in 300 s")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()


def tool_specs() -> list[Any]:
    """Bastion's own tools, as the agent offers them (a throwaway home)."""
    from bastion.app import build_app
    from bastion.config.model import Config

    class _NoModel:
        name = "none"

    os.environ.setdefault("BASTION_HOME", tempfile.mkdtemp(prefix="bench-modes-"))
    app = build_app(Config(), model=_NoModel())  # type: ignore[arg-type]
    try:
        return app.agent().tool_specs()
    finally:
        app.audit.close()


def http_model(url: str, *, before: bool = False) -> Model:
    """What ``model.backend: openai`` + ``model.base_url`` gives (native_tools off)."""
    from bastion.config.model import Config
    from bastion.llm._constrained import Policy
    from bastion.models import create_model

    cfg = Config()
    cfg.model.backend = "openai"
    cfg.model.base_url = url
    cfg.model.name = "local"
    model = create_model(cfg)
    if before:
        model.policy = Policy(trust_generated_pick=True)  # type: ignore[attr-defined]
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=len(CASES), help="first N requests")
    ap.add_argument("--only", action="append", default=[],
                    help="only requests containing this text (repeatable)")
    ap.add_argument("--paths", default="embedded,http,http-before",
                    help="comma-separated: embedded,http,http-before")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads, both paths")
    ap.add_argument("--gguf", type=Path, default=None, help="GGUF (default: the shipped one)")
    args = ap.parse_args()
    from bastion.llm.embedded import EmbeddedModel, load_llama, shipped_model_path

    gguf = args.gguf or shipped_model_path()
    paths = [p for p in args.paths.split(",") if p]
    cases = [c for c in CASES[: args.limit]
             if not args.only or any(o.lower() in c[0].lower() for o in args.only)]
    specs = tool_specs()
    system = AgentConfig().system_prompt
    models: dict[str, Model] = {}
    with contextlib.ExitStack() as stack:
        if "embedded" in paths:
            models["embedded"] = EmbeddedModel(load_llama(gguf, n_ctx=4096,
                                                          n_threads=args.threads))
        if {"http", "http-before"} & set(paths):
            url = stack.enter_context(llama_server(gguf, args.threads))
            for p in ("http", "http-before"):
                if p in paths:
                    models[p] = http_model(url, before=p == "http-before")
        results: dict[str, list[Outcome]] = {p: [] for p in paths}

        async def run() -> None:
            for i, case in enumerate(cases):
                order = paths if i % 2 == 0 else paths[::-1]
                for p in order:
                    results[p].append(await first_step(models[p], specs, system, case[0]))
                row = " | ".join(f"{p}: {results[p][-1].label()} ({results[p][-1].seconds:.1f}s)"
                                 + ("" if tool_ok(case, results[p][-1]) else " WRONG")
                                 for p in paths)
                print(f"{case[0][:44]:44} | {row}", flush=True)
            for m in models.values():
                closer = getattr(m, "aclose", None)
                if closer is not None:
                    await closer()

        asyncio.run(run())
    print()
    print(f"{len(cases)} requests, {args.threads} threads, model {gguf.name}")
    print(f"{'path':10} {'right tool':>10} {'+ args':>8} {'s/request p50':>14} {'mean':>6}")
    for p in paths:
        outs = results[p]
        secs = [o.seconds for o in outs]
        right = sum(tool_ok(c, o) for c, o in zip(cases, outs, strict=True))
        full = sum(args_ok(c, o) for c, o in zip(cases, outs, strict=True))
        print(f"{p:10} {right:>5}/{len(cases):<4} {full:>4}/{len(cases):<3} "
              f"{statistics.median(secs):>14.2f} {statistics.fmean(secs):>6.2f}")
    base = statistics.fmean(o.seconds for o in results[paths[0]])
    for p in paths[1:]:
        ratio = statistics.fmean(o.seconds for o in results[p]) / base
        print(f"time {p}/{paths[0]}: {ratio:.2f}x")


if __name__ == "__main__":
    main()

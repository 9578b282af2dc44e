"""Agent overhead on the shipped model: raw llama-cpp-python vs Agent vs the REST API.

The same prompts (temperature 0, so the same tokens) run
  (a) raw: ``Llama.create_completion(stream=True)`` on the prompt the agent would send,
  (b) agent: ``Agent.run`` for one step with no tools (the embedded backend underneath),
  (c) api: ``POST /v1/chat/completions`` (model ``bastion-agent``, streamed) to the real
      FastAPI app served by uvicorn on loopback,
interleaved per prompt so machine load drifts affect all three alike. Printed: tokens/s of
each, the ratios b/a and c/a, and the agent's own time per step (turn wall time minus the
time spent inside the model) at p50/p90.

    .venv/bin/python bench/agent_overhead.py [--rounds 3] [--max-tokens 64] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from bastion.agent.events import TurnDone  # noqa: E402
from bastion.llm._constrained import plain_messages  # noqa: E402
from bastion.llm.embedded import EmbeddedModel, load_llama, shipped_model_path  # noqa: E402
from bastion.llm.messages import ChatSettings, Message, ModelEvent, ToolSpec  # noqa: E402

PROMPTS = [
    "Explain in two sentences what a firewall does.",
    "Write a short poem about the sea.",
    "What is the capital of France? Answer in one sentence.",
    "Give three tips for writing clean Python code.",
    "Describe a sunrise in a few words.",
]


class TimedModel:
    """Wraps a model and accumulates the time spent inside ``chat`` (producing events)."""

    def __init__(self, inner: EmbeddedModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_s = 0.0

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        it = self.inner.chat(messages, tools, settings=settings).__aiter__()
        while True:
            t0 = time.perf_counter()
            try:
                ev = await it.__anext__()
            except StopAsyncIteration:
                self.model_s += time.perf_counter() - t0
                return
            self.model_s += time.perf_counter() - t0
            yield ev

    async def aclose(self) -> None:
        await self.inner.aclose()


def run_raw(
    model: EmbeddedModel, system: str, prompt: str, max_tokens: int
) -> tuple[str, int, float]:
    eng = model._engine  # the same rendering the backend uses: identical prompt tokens
    toks = eng.tokens(
        eng.render(plain_messages([Message("system", system), Message("user", prompt)]))
    )
    t0 = time.perf_counter()
    text = []
    for chunk in model.llama.create_completion(
        prompt=toks, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0, stream=True
    ):
        text.append(chunk["choices"][0]["text"])
    wall = time.perf_counter() - t0
    out = "".join(text)
    return out, eng.count(out), wall


async def run_agent(app: Any, timed: TimedModel, prompt: str) -> tuple[str, int, float, float]:
    agent = app.agent()
    timed.model_s = 0.0
    t0 = time.perf_counter()
    done = None
    async for ev in agent.run(prompt):
        if isinstance(ev, TurnDone):
            done = ev
    wall = time.perf_counter() - t0
    assert done is not None
    return done.answer, done.completion_tokens, wall, wall - timed.model_s


def run_api(url: str, token: str, prompt: str, max_tokens: int) -> tuple[str, float]:
    import httpx

    body = {
        "model": "bastion-agent",
        "stream": True,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    text: list[str] = []
    t0 = time.perf_counter()
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json=body,
        timeout=600,
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        resp.raise_for_status()
        import json

        for line in resp.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunk = json.loads(line[5:])
                for ch in chunk.get("choices") or []:
                    text.append((ch.get("delta") or {}).get("content") or "")
    return "".join(text), time.perf_counter() - t0


def start_api(app: Any) -> tuple[str, Any] | None:
    try:
        import uvicorn

        from bastion.server.app import create_app
    except ImportError as exc:
        print(f"(c) skipped: the API is not available ({exc})")
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(app, close_app=False), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    # temperature 0 gives the same tokens up to ties broken differently when llama.cpp reuses
    # a cached prompt prefix, so each path's rate uses its own token count.
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import os
    import tempfile

    os.environ.setdefault("BASTION_HOME", tempfile.mkdtemp(prefix="bastion-bench-"))
    from bastion.app import build_app
    from bastion.config.model import Config
    from bastion.memory.base import EphemeralMemory
    from bastion.tools.registry import ToolRegistry

    llama = load_llama(shipped_model_path(), n_ctx=4096, n_threads=args.threads)
    model = EmbeddedModel(llama)
    timed = TimedModel(model)
    token = "bench-token-0123456789"
    config = Config.model_validate(
        {
            "model": {"max_tokens": args.max_tokens, "temperature": 0.0},
            "security": {"sandbox": "none"},
            "api": {"token": token},
        }
    )
    app = build_app(config, model=timed, registry=ToolRegistry(), memory=EphemeralMemory())  # type: ignore[arg-type]
    for name in app.registry.names():  # one step, no tools (an empty registry means built-ins)
        app.registry.remove(name)
    assert not app.agent().tool_specs()
    system = config.agent.system_prompt
    api = start_api(app)

    raw_rate: list[float] = []
    agent_rate: list[float] = []
    api_rate: list[float] = []
    overhead_ms: list[float] = []
    run_raw(model, system, "warm up", 8)
    for _ in range(args.rounds):
        for prompt in PROMPTS:
            text_a, n, wall_a = run_raw(model, system, prompt, args.max_tokens)
            text_b, n_b, wall_b, over = asyncio.run(run_agent(app, timed, prompt))
            raw_rate.append(n / wall_a)
            agent_rate.append(n_b / wall_b)
            overhead_ms.append(over * 1000)
            if api:
                text_c, wall_c = run_api(api[0], token, prompt, args.max_tokens)
                api_rate.append(model._engine.count(text_c) / wall_c)
    a = statistics.median(raw_rate)
    b = statistics.median(agent_rate)
    # On a shared machine the best run of each path is the least disturbed by other load.
    print(
        f"best runs: raw {max(raw_rate):.1f}, agent {max(agent_rate):.1f}"
        + (f", api {max(api_rate):.1f}" if api_rate else "")
        + " tok/s"
        + f" (b/a {max(agent_rate) / max(raw_rate):.3f}"
        + (f", c/a {max(api_rate) / max(raw_rate):.3f})" if api_rate else ")")
    )
    print(
        f"model {shipped_model_path().name}, {len(raw_rate)} runs of {args.max_tokens} tokens max"
    )
    print(f"(a) raw llama-cpp-python : {a:7.1f} tok/s (median)")
    print(f"(b) Agent, one step      : {b:7.1f} tok/s   ratio b/a = {b / a:.3f}")
    if api_rate:
        c = statistics.median(api_rate)
        print(f"(c) REST API (SSE)       : {c:7.1f} tok/s   ratio c/a = {c / a:.3f}")
    else:
        print("(c) REST API             : not measured")
    q = statistics.quantiles(overhead_ms, n=10)
    print(
        f"agent overhead per step  : p50 {statistics.median(overhead_ms):.2f} ms, "
        f"p90 {q[-1]:.2f} ms"
    )
    if api:
        api[1].should_exit = True


if __name__ == "__main__":
    main()

"""Benchmark of the cluster router against fast fake OpenAI-compatible servers.

Run: ``.venv/bin/python bench/router.py [--requests 1000] [--chaos 1000]``

1. Added latency at 50 and 200 concurrent streaming requests, side by side in one run:
   every worker alternates a *direct* request (the same per-node HTTP client, node picked
   round-robin) and a *routed* one (through ``ClusterModel``). Reported: p50/p99 of both,
   their difference, and the router's own time per request measured exactly (routed
   wall time minus the time spent inside the node client's stream).
2. Failover time: a long stream is running on a node; SIGKILL it; time from the kill to
   the next token the client receives (from another node).
3. Chaos: N streaming requests at 50 concurrent while a chaos task SIGKILLs random nodes
   and restarts them; failed requests (target 0) and wrong/duplicated answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bastion.cluster.factory import create_cluster_model  # noqa: E402
from bastion.cluster.model import ClusterModel  # noqa: E402
from bastion.cluster.node import NodeSpec  # noqa: E402
from bastion.config.model import Config  # noqa: E402
from bastion.llm.base import Model  # noqa: E402
from bastion.llm.http import PROFILES, HttpModel  # noqa: E402
from bastion.messages import (  # noqa: E402
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolSpec,
)

TOKENS = 16
EXPECTED = " ".join(
    ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
     "juliet", "kilo", "lima", "mike"][i % 13] for i in range(TOKENS)
)  # fmt: skip
PROMPT = [Message("user", "hi")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeNode:
    def __init__(self, name: str, tokens: int = TOKENS, delay: float = 0.0) -> None:
        self.name = name
        self.port = free_port()
        self.tokens = tokens
        self.delay = delay
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion.testing.openai_server", "--port", str(self.port),
             "--tokens", str(self.tokens), "--token-delay", str(self.delay)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def wait_ready(self) -> None:
        async with httpx.AsyncClient() as c:
            for _ in range(200):
                try:
                    await c.get(self.url + "/v1/models", timeout=0.5)
                    return
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def restart(self, after: float) -> None:
        await asyncio.sleep(after)
        self.start()
        await self.wait_ready()
        self.ready = True


class Timed:
    """Wraps a node client to measure the time spent inside its stream."""

    def __init__(self, inner: Model, sink: dict[int, float], cpu: dict[int, list[float]]) -> None:
        self.inner = inner
        self.name = inner.name
        self.sink = sink
        self.cpu = cpu  # thread CPU time at the start and the end of the inner stream

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        t0 = time.perf_counter()
        key = id(asyncio.current_task())
        marks = self.cpu.setdefault(key, [time.thread_time(), 0.0])
        try:
            async for ev in self.inner.chat(messages, tools, settings=settings):
                yield ev
        finally:
            self.sink[key] = self.sink.get(key, 0.0) + time.perf_counter() - t0
            marks[1] = time.thread_time()

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_cluster(
    nodes: list[FakeNode],
    sink: dict[int, float] | None = None,
    cpu: dict[int, list[float]] | None = None,
) -> ClusterModel:
    cfg = Config.model_validate(
        {
            "model": {"backend": "cluster", "name": "fake-model"},
            "cluster": {
                "tier": "small",
                "nodes": [{"name": n.name, "url": n.url, "engine": "openai"} for n in nodes],
                "health_interval_s": 0.2,
                "health_timeout_s": 1.0,
                "breaker_cooldown_s": 0.3,
                "breaker_max_cooldown_s": 1.0,
                "max_attempts": 8,
                "backoff_base_s": 0.02,
                "backoff_max_s": 0.3,
                # generous: on a loaded 2-core machine 200 streams queue for seconds, and a
                # timeout here would count as a node failure and distort the comparison
                "first_token_timeout_s": 60.0,
                "idle_timeout_s": 30.0,
            },
        }
    )
    clients: dict[str, Model] = {}

    def factory(spec: NodeSpec, model_name: str) -> Model:
        inner = HttpModel(model_name, quirks=PROFILES["llamacpp"], base_url=spec.api_base,
                          timeout_s=30.0)  # fmt: skip
        clients[spec.name] = inner
        if sink is None:
            return inner
        return Timed(inner, sink, cpu if cpu is not None else {})

    model = create_cluster_model(cfg, model_factory=factory)
    model.bench_clients = clients  # type: ignore[attr-defined]
    model.config = cfg  # type: ignore[attr-defined]
    return model


async def stream_text(model: Model, settings: ChatSettings) -> str:
    out = []
    async for ev in model.chat(PROMPT, settings=settings):
        if isinstance(ev, TextDelta):
            out.append(ev.text)
        elif isinstance(ev, Finish):
            pass
    return "".join(out)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def latency(nodes: list[FakeNode], concurrency: int, total: int) -> None:
    sink: dict[int, float] = {}
    cpu: dict[int, list[float]] = {}
    cluster = make_cluster(nodes, sink, cpu)
    await cluster.start()
    settings = ChatSettings(temperature=0.0, max_tokens=TOKENS, seed=1)
    # warm up: connections to every node through both paths
    for _ in range(len(nodes) * 2):
        await stream_text(cluster, settings)
    direct_clients = [cluster.bench_clients[n.name] for n in nodes]  # type: ignore[attr-defined]
    direct: list[float] = []
    routed: list[float] = []
    overhead: list[float] = []
    own_cpu: list[float] = []
    rr = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal rr
        async with sem:
            if i % 2 == 0:
                rr += 1
                client = direct_clients[rr % len(direct_clients)]
                t0 = time.perf_counter()
                text = await stream_text(client, settings)
                direct.append(time.perf_counter() - t0)
            else:
                key = id(asyncio.current_task())
                sink.pop(key, None)
                cpu.pop(key, None)
                t0, c0 = time.perf_counter(), time.thread_time()
                text = await stream_text(cluster, settings)
                dt, c1 = time.perf_counter() - t0, time.thread_time()
                routed.append(dt)
                overhead.append(dt - sink.pop(key, dt))
                # the router's own stretches (before the node call, after its stream) never
                # yield to the loop, so thread CPU time over them is the router's CPU cost
                start, end = cpu.pop(key, [c0, c1])
                own_cpu.append((start - c0) + (c1 - end))
            assert text == EXPECTED, text

    await asyncio.gather(*(one(i) for i in range(total * 2)))
    await cluster.aclose()
    ms = 1000.0
    print(f"\n== {concurrency} concurrent streaming requests, {total} direct + {total} routed "
          f"({TOKENS} tokens each, {len(nodes)} fake nodes)")  # fmt: skip
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'direct':24}{pct(direct, 50) * ms:10.2f}{pct(direct, 99) * ms:10.2f}")
    print(f"{'routed':24}{pct(routed, 50) * ms:10.2f}{pct(routed, 99) * ms:10.2f}")
    print(f"{'difference':24}{(pct(routed, 50) - pct(direct, 50)) * ms:10.2f}"
          f"{(pct(routed, 99) - pct(direct, 99)) * ms:10.2f}")  # fmt: skip
    print(
        f"{'router own time':24}{pct(overhead, 50) * ms:10.3f}{pct(overhead, 99) * ms:10.3f}"
        "   (routed wall time - time inside the node client)"
    )
    print(
        f"{'router own CPU time':24}{pct(own_cpu, 50) * ms:10.3f}{pct(own_cpu, 99) * ms:10.3f}"
        "   (wall p99 above includes OS preemption on a loaded machine)"
    )
    print(f"{'ratio routed/direct p50':24}{pct(routed, 50) / pct(direct, 50):10.3f}")


class InstantNode:
    """An in-process node client: TOKENS text events, no network (isolates router cost)."""

    name = "instant"

    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        words = EXPECTED.split(" ")
        for i, w in enumerate(words):
            await asyncio.sleep(0)  # a network read would yield to the loop here
            yield TextDelta(w if i == 0 else " " + w)
        yield Finish("stop")

    async def aclose(self) -> None:
        pass


async def in_process(concurrency: int, total: int) -> None:
    nodes = [FakeNode(f"i{i}") for i in range(4)]  # specs only: nothing is started
    node = InstantNode()
    cfg_cluster = make_cluster(nodes)
    cluster = create_cluster_model(
        cfg_cluster.config,
        model_factory=lambda spec, name: node,  # type: ignore[attr-defined]
    )
    await cfg_cluster.aclose()
    cluster._services = []  # no health checks: these nodes exist only in this process
    settings = ChatSettings(temperature=0.0, max_tokens=TOKENS, seed=1)
    for _ in range(50):
        await stream_text(cluster, settings)
    direct: list[float] = []
    routed: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            text = await stream_text(node if i % 2 == 0 else cluster, settings)
            (direct if i % 2 == 0 else routed).append(time.perf_counter() - t0)
            assert text == EXPECTED

    await asyncio.gather(*(one(i) for i in range(total * 2)))
    await cluster.aclose()
    us = 1e6
    print(f"\n== in-process, {concurrency} concurrent, {total} + {total} requests "
          f"({TOKENS} events each): router cost without network noise")  # fmt: skip
    print(f"{'':24}{'p50 us':>10}{'p99 us':>10}")
    print(f"{'direct':24}{pct(direct, 50) * us:10.1f}{pct(direct, 99) * us:10.1f}")
    print(f"{'routed':24}{pct(routed, 50) * us:10.1f}{pct(routed, 99) * us:10.1f}")
    print(f"{'added':24}{(pct(routed, 50) - pct(direct, 50)) * us:10.1f}"
          f"{(pct(routed, 99) - pct(direct, 99)) * us:10.1f}")  # fmt: skip


async def failover(rounds: int) -> None:
    nodes = [FakeNode(f"f{i}", tokens=4000, delay=0.001) for i in range(3)]
    for n in nodes:
        n.start()
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    cluster = make_cluster(nodes)
    await cluster.start()
    times: list[float] = []
    settings = ChatSettings(temperature=0.0, max_tokens=400, seed=1)
    try:
        for _ in range(rounds):
            killed_at: float | None = None
            got = 0
            victim: FakeNode | None = None
            async for ev in cluster.chat(PROMPT, settings=settings):
                if not isinstance(ev, TextDelta):
                    continue
                got += 1
                if killed_at is not None:
                    times.append(time.perf_counter() - killed_at)
                    killed_at = None
                if got == 50 and victim is None:
                    busy = [n for n in nodes if cluster.router.get(n.name).in_flight]
                    victim = busy[0]
                    killed_at = time.perf_counter()
                    victim.kill()
            assert victim is not None
            victim.start()
            await victim.wait_ready()
            for _ in range(100):  # let its breaker close before the next round
                if all(n.breaker.state.value == "closed" for n in cluster.router.nodes.values()):
                    break
                await asyncio.sleep(0.05)
    finally:
        await cluster.aclose()
        for n in nodes:
            n.kill()
    ms = 1000.0
    print(f"\n== failover: SIGKILL the node mid-stream, time to the next token ({rounds} rounds)")
    print(f"median {statistics.median(times) * ms:.1f} ms, max {max(times) * ms:.1f} ms "
          f"(replay of 50 tokens at 1 ms/token on the next node included)")  # fmt: skip


async def chaos(total: int, concurrency: int = 50) -> None:
    nodes = [FakeNode(f"c{i}", tokens=TOKENS, delay=0.002) for i in range(4)]
    for n in nodes:
        n.start()
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    cluster = make_cluster(nodes)
    await cluster.start()
    settings = ChatSettings(temperature=0.0, max_tokens=TOKENS, seed=1)
    failed: list[str] = []
    wrong_texts: list[str] = []
    wrong = 0
    done = 0
    kills = 0
    stop = asyncio.Event()
    rng = random.Random(7)

    for n in nodes:
        n.ready = True
    restarts: set[asyncio.Task[None]] = set()

    async def monkey() -> None:
        nonlocal kills
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            up = [n for n in nodes if n.ready]
            if len(up) > 2:  # keep at least two nodes serving
                victim = rng.choice(up)
                victim.ready = False
                victim.kill()
                kills += 1
                task = asyncio.create_task(victim.restart(rng.uniform(0.3, 1.0)))
                restarts.add(task)
                task.add_done_callback(restarts.discard)

    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal wrong, done
        async with sem:
            try:
                text = await stream_text(cluster, settings)
            except Exception as exc:  # noqa: BLE001 - counted
                failed.append(str(exc)[:160])
                return
            done += 1
            if text != EXPECTED:
                wrong += 1
                wrong_texts.append(f"{text!r} via {cluster.history[-1]}")

    chaos_task = asyncio.create_task(monkey())
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    elapsed = time.perf_counter() - t0
    stop.set()
    await chaos_task
    await asyncio.gather(*restarts)
    failovers = int(sum(cluster.metrics.failovers.values.values()))
    await cluster.aclose()
    for n in nodes:
        n.kill()
    print(f"\n== chaos: {total} streaming requests, {concurrency} concurrent, 4 nodes, "
          f"{kills} random SIGKILLs (restarted 0.3-1 s later), {elapsed:.1f} s")  # fmt: skip
    print(f"completed {done}, failed {len(failed)} (target 0), wrong or duplicated text {wrong}, "
          f"failovers (mid-stream or before the first token): {failovers}")  # fmt: skip
    for f in failed[:5]:
        print("  failed:", f)
    for w in wrong_texts[:5]:
        print("  wrong:", w[:400])


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000, help="per side, per concurrency level")
    ap.add_argument("--chaos", type=int, default=1000)
    ap.add_argument("--failover-rounds", type=int, default=5)
    ap.add_argument("--only", choices=["latency", "failover", "chaos"], default=None)
    args = ap.parse_args()
    os.environ.setdefault("PYTHONPATH", f"{ROOT}/src:{ROOT}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(absolute times depend on it; compare the columns of one run)")  # fmt: skip
    if args.only in (None, "latency"):
        for c in (50, 200):
            await in_process(c, args.requests)
        nodes = [FakeNode(f"n{i}") for i in range(4)]
        for n in nodes:
            n.start()
        try:
            await asyncio.gather(*(n.wait_ready() for n in nodes))
            for c in (50, 200):
                await latency(nodes, c, args.requests)
        finally:
            for n in nodes:
                n.kill()
    if args.only in (None, "failover"):
        await failover(args.failover_rounds)
    if args.only in (None, "chaos"):
        await chaos(args.chaos)


if __name__ == "__main__":
    asyncio.run(main())

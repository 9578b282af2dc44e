"""Three real llama.cpp servers: SIGKILL one mid-stream, the answer completes elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.cluster.breaker import BreakerState
from bastion.cluster.factory import create_cluster_model
from bastion.cluster.model import ClusterModel
from bastion.config.model import Config
from bastion.messages import ChatSettings, Finish, Message, TextDelta

from ._procs import Proc, free_port, llama_server

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROMPT = [Message("user", "Write a short story about a cat who learns to fly.")]
SETTINGS = ChatSettings(temperature=0.0, max_tokens=24)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    from bastion.llm.embedded import shipped_model_path

    model = shipped_model_path()
    logs: Path = tmp_path_factory.mktemp("llama-logs")
    procs = {f"n{i}": llama_server(model, free_port(), logs / f"n{i}.log") for i in range(3)}
    try:
        for p in procs.values():
            p.start(wait=False)
        for p in procs.values():
            from ._procs import wait_http

            wait_http(p.url + "/v1/models", 120, p.popen)
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def make(nodes: dict[str, Proc]) -> ClusterModel:
    cfg = Config.model_validate(
        {
            "model": {"backend": "cluster", "name": "smollm2-135m"},
            "cluster": {
                "nodes": [
                    {
                        "name": n,
                        "url": p.url,
                        "engine": "llama_cpp",
                        "models": ["smollm2-135m"],
                        "max_context": 1024,
                    }
                    for n, p in nodes.items()
                ],
                "health_interval_s": 0.3,
                "health_timeout_s": 20.0,
                "breaker_cooldown_s": 0.3,
                "breaker_max_cooldown_s": 1.0,
                "backoff_base_s": 0.05,
            },
        }
    )
    model = create_cluster_model(cfg)
    assert isinstance(model, ClusterModel)
    return model


async def run(model: ClusterModel, kill: Proc | None = None, nodes: dict[str, Proc] | None = None):
    text = ""
    finishes = []
    killed = None
    async for ev in model.chat(PROMPT, settings=SETTINGS):
        if isinstance(ev, TextDelta):
            text += ev.text
            if kill is None and nodes is not None and killed is None and len(text) > 12:
                # the node streaming this answer right now dies
                busy = [n for n, node in model.router.nodes.items() if node.in_flight]
                assert len(busy) == 1
                killed = busy[0]
                nodes[killed].kill()
        elif isinstance(ev, Finish):
            finishes.append(ev.reason)
    return text, finishes, killed


async def test_sigkill_mid_stream_then_restart(nodes: dict[str, Proc]) -> None:
    model = make(nodes)
    try:
        reference, finishes, _ = await run(model)
        assert len(reference) > 30 and finishes == ["length"]

        text, finishes, killed = await run(model, nodes=nodes)
        assert killed is not None
        rec = model.history[-1]
        # one coherent stream: exactly the uninterrupted answer, nothing repeated or lost
        assert text == reference
        assert finishes == ["length"]
        assert rec.ok and rec.nodes[0] == killed and rec.failovers == 1
        assert rec.mode == "replay" and len(rec.nodes) == 2
        dead = model.router.get(killed)
        assert dead.breaker.state is not BreakerState.CLOSED

        # the next request goes straight to a live node, no failed try first
        short = ChatSettings(temperature=0.0, max_tokens=3)
        async for _ev in model.chat([Message("user", "Hi")], settings=short):
            pass
        assert model.history[-1].ok
        assert killed not in model.history[-1].nodes and len(model.history[-1].nodes) == 1

        # restart the node on the same port: the breaker closes and it takes traffic again
        nodes[killed].start()
        for _ in range(300):  # bounded wait for the health loop's half-open probe
            if dead.breaker.state is BreakerState.CLOSED:
                break
            await asyncio.sleep(0.1)
        assert dead.breaker.state is BreakerState.CLOSED
        served_before = dead.served
        for _ in range(6):
            async for _ev in model.chat([Message("user", "Hi")], settings=short):
                pass
            if dead.served > served_before:
                break
        assert dead.served > served_before
        metrics = model.metrics.render()
        assert (
            f'bastion_cluster_breaker_transitions_total{{from_state="half_open",node="{killed}",to_state="closed"}}'
            in metrics
        )
        assert 'bastion_cluster_failovers_total{mode="replay"} 1' in metrics
    finally:
        await model.aclose()

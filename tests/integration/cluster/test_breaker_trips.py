"""A node that answers with 500s, or too slowly, trips its breaker; traffic never fails."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bastion.cluster.breaker import BreakerState
from bastion.cluster.factory import create_cluster_model
from bastion.cluster.model import ClusterModel
from bastion.config.model import Config
from bastion.messages import ChatSettings, Message, TextDelta

from ._procs import Proc, fake_server, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Proc]]:
    procs = {
        "good": fake_server(free_port(), "--tokens", "8"),
        "broken": fake_server(free_port(), "--mode", "error500"),
        "stalled": fake_server(free_port(), "--mode", "slow", "--slow-s", "30"),
    }
    try:
        for p in procs.values():
            p.start()
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def make(fakes: dict[str, Proc]) -> ClusterModel:
    cfg = Config.model_validate(
        {
            "model": {"backend": "cluster", "name": "fake-model"},
            "cluster": {
                "tier": "small",
                "nodes": [{"name": n, "url": p.url, "engine": "openai"} for n, p in fakes.items()],
                "health_interval_s": 0.2,
                "health_timeout_s": 1.0,
                "breaker_failures": 2,
                "breaker_cooldown_s": 30,
                "first_token_timeout_s": 1.0,
                "backoff_base_s": 0.01,
            },
        }
    )
    model = create_cluster_model(cfg)
    assert isinstance(model, ClusterModel)
    return model


async def ask(model: ClusterModel) -> str:
    out = ""
    async for ev in model.chat([Message("user", "hi")], settings=ChatSettings(max_tokens=8)):
        if isinstance(ev, TextDelta):
            out += ev.text
    return out


async def test_500s_and_stalls_trip_breakers_while_requests_succeed(
    fakes: dict[str, Proc],
) -> None:
    model = make(fakes)
    try:
        answers = [await ask(model) for _ in range(6)]
        assert all(a == "alpha bravo charlie delta echo foxtrot golf hotel" for a in answers)
        router = model.router
        for _ in range(100):  # health probes run every 0.2 s; bounded wait, not a timing test
            states = {n: router.get(n).breaker.state for n in ("broken", "stalled")}
            if all(s is BreakerState.OPEN for s in states.values()):
                break
            await asyncio.sleep(0.1)
        assert router.get("broken").breaker.state is BreakerState.OPEN
        assert router.get("stalled").breaker.state is BreakerState.OPEN
        assert router.get("good").breaker.state is BreakerState.CLOSED
        text = model.metrics.render()
        assert (
            'bastion_cluster_breaker_transitions_total{from_state="closed",node="broken",'
            'to_state="open"} 1' in text
        )
        assert 'bastion_cluster_errors_total{kind="soft",node="broken"}' in text
        # with both breakers open every request goes straight to the good node
        before = router.get("good").served
        for _ in range(3):
            await ask(model)
            assert model.history[-1].nodes == ["good"]
        assert router.get("good").served == before + 3
    finally:
        await model.aclose()

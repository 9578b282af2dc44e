"""Routing, retry and failover logic of ClusterModel against scripted node clients."""

from __future__ import annotations

import asyncio

import pytest

from bastion.cluster.breaker import BreakerState
from bastion.cluster.model import CallPolicy, ClusterModel
from bastion.cluster.node import NodeSpec
from bastion.cluster.router import BreakerSettings, Router
from bastion.errors import ClusterError
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
)
from tests.fakes.cluster_nodes import Behaviour, FakeNodeModel

ANSWER = "one two three four five six"
Q = [Message("user", "count to six")]


def cluster(
    *behaviours: Behaviour, engines: tuple[str, ...] = (), policy: CallPolicy | None = None
) -> tuple[ClusterModel, dict[str, FakeNodeModel]]:
    router = Router(BreakerSettings(threshold=2, cooldown_s=30))
    fakes: dict[str, FakeNodeModel] = {}
    for i, b in enumerate(behaviours):
        name = f"n{i}"
        engine = engines[i] if i < len(engines) else "llama_cpp"
        router.add(NodeSpec(name, f"http://{name}:1", engine=engine), source="config")  # type: ignore[arg-type]
        fakes[name] = FakeNodeModel(name, b)
    pol = policy or CallPolicy(backoff_base_s=0.001, backoff_max_s=0.002)
    model = ClusterModel(
        router, lambda s, m: fakes[s.name], model_name="m", tier="small", policy=pol
    )
    return model, fakes


async def collect(model: ClusterModel, msgs: list[Message] = Q) -> list[ModelEvent]:
    return [ev async for ev in model.chat(msgs, settings=ChatSettings(temperature=0.0))]


def text_of(events: list[ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_dead_node_restarted_elsewhere_and_skipped_next_time() -> None:
    model, fakes = cluster(Behaviour(fail="connect"), Behaviour(), Behaviour())
    # make n0 the first choice
    model.router.get("n1").in_flight = model.router.get("n2").in_flight = 0
    events = await collect(model)
    assert text_of(events) == ANSWER
    assert isinstance(events[-1], Finish)
    first = model.history[-1]
    assert first.ok
    n0 = model.router.get("n0")
    if "n0" in first.nodes:  # it was tried: the hard failure opened its breaker at once
        assert n0.breaker.state is BreakerState.OPEN
    n0.breaker.force_open()
    # the LiteLLM #40405 trap: later requests must go straight to a healthy node
    for _ in range(6):
        await collect(model)
        assert "n0" not in model.history[-1].nodes
        assert len(model.history[-1].nodes) == 1


async def test_one_soft_failure_demotes_node_for_next_requests() -> None:
    model, fakes = cluster(Behaviour(fail="500"), Behaviour())
    seen_n0 = 0
    for _ in range(5):
        events = await collect(model)
        assert text_of(events) == ANSWER
        seen_n0 += "n0" in model.history[-1].nodes
    assert seen_n0 == 1  # tried once, then ranked behind the healthy node
    assert model.router.get("n0").breaker.failures == 1
    assert model.metrics.errors.get(node="n0", kind="soft") == 1


async def test_mid_stream_cut_continues_by_replay_without_duplication() -> None:
    model, fakes = cluster(Behaviour(fail="cut", cut_after=3), Behaviour(), Behaviour())
    model.router.get("n1").in_flight = 5
    model.router.get("n2").in_flight = 5  # n0 is chosen first
    events = await collect(model)
    assert text_of(events) == ANSWER  # one coherent stream: nothing repeated, nothing lost
    rec = model.history[-1]
    assert rec.ok and rec.nodes[0] == "n0" and rec.failovers == 1 and rec.mode == "replay"
    assert [e.reason for e in events if isinstance(e, Finish)] == ["stop"]
    assert model.metrics.failovers.get(mode="replay") == 1
    assert model.router.get("n0").breaker.state is BreakerState.OPEN


async def test_replay_that_diverges_switches_to_prefill() -> None:
    model, fakes = cluster(
        Behaviour(fail="cut", cut_after=2), Behaviour(text="one TWO three four five six")
    )
    model.router.get("n1").in_flight = 5
    events = await collect(model)
    # "one two" was shown; the replay diverged at "TWO", so n1 was asked to continue the
    # partial answer (prefill) and the client got one stream
    assert text_of(events) == ANSWER
    assert model.history[-1].mode == "prefill"
    last_sent = fakes["n1"].seen[-1]
    assert last_sent[-1].role == "assistant" and last_sent[-1].content == "one two"


async def test_prefill_engines_continue_the_partial_answer() -> None:
    model, fakes = cluster(
        Behaviour(fail="cut", cut_after=4), Behaviour(), engines=("llama_cpp", "ollama")
    )
    model.router.get("n1").in_flight = 5
    events = await collect(model)
    assert text_of(events) == ANSWER
    assert fakes["n1"].seen[-1][-1] == Message("assistant", "one two three four")
    assert model.history[-1].mode == "prefill"


async def test_tool_calls_of_a_cut_attempt_are_never_delivered() -> None:
    dead_call = ToolCall("shell", {"cmd": "rm -rf build"}, id="call_dead")
    good_call = ToolCall("shell", {"cmd": "rm -rf build"}, id="call_good")
    model, _ = cluster(
        Behaviour(text="ok", fail="cut", cut_after=99, calls=[dead_call]),
        Behaviour(text="ok", calls=[good_call]),
    )
    model.router.get("n1").in_flight = 5
    events = await collect(model)
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert [c.id for c in calls] == ["call_good"]  # exactly one call, from the finished attempt
    assert text_of(events) == "ok"


async def test_all_nodes_failing_is_one_clear_error_with_bounded_attempts() -> None:
    model, fakes = cluster(Behaviour(fail="500"), Behaviour(fail="connect"))
    with pytest.raises(ClusterError) as info:
        await collect(model)
    assert "every node failed" in info.value.message
    assert info.value.fix
    assert len(model.history[-1].nodes) <= model.policy.max_attempts


async def test_client_error_does_not_trip_breaker() -> None:
    model, _ = cluster(Behaviour(fail="400"))
    with pytest.raises(ClusterError, match="refused the request"):
        await collect(model)
    assert model.router.get("n0").breaker.failures == 0


async def test_slow_first_token_times_out_and_fails_over() -> None:
    pol = CallPolicy(first_token_timeout_s=0.05, backoff_base_s=0.001, backoff_max_s=0.001)
    model, _ = cluster(Behaviour(delay_s=5), Behaviour(), policy=pol)
    model.router.get("n1").in_flight = 5
    events = await collect(model)
    assert text_of(events) == ANSWER
    assert model.metrics.errors.get(node="n0", kind="soft") == 1


async def test_no_node_fits_context_is_clear() -> None:
    model, _ = cluster(Behaviour())
    huge = [Message("user", "word " * 40000)]
    with pytest.raises(ClusterError, match="context"):
        await collect(model, huge)


async def test_client_cancel_releases_load_and_probe() -> None:
    model, _ = cluster(Behaviour(text=" ".join(["w"] * 50)))
    gen = model.chat(Q)
    await gen.__anext__()
    assert model.router.get("n0").in_flight == 1
    await gen.aclose()
    assert model.router.get("n0").in_flight == 0
    assert model.metrics.requests.get(node="n0", outcome="cancelled") == 1


async def test_concurrent_requests_spread_over_nodes() -> None:
    model, fakes = cluster(Behaviour(), Behaviour(), Behaviour())
    results = await asyncio.gather(*(collect(model) for _ in range(30)))
    assert all(text_of(r) == ANSWER for r in results)
    served = {n.name: n.served for n in model.router.nodes.values()}
    assert all(v >= 5 for v in served.values()), served


async def test_metrics_and_status_after_traffic() -> None:
    model, _ = cluster(Behaviour(), Behaviour(fail="connect"))
    for _ in range(3):
        await collect(model)
    text = model.metrics.render()
    assert 'bastion_cluster_requests_total{node="n0",outcome="ok"}' in text
    assert 'bastion_cluster_tokens_total{direction="completion",node="n0"}' in text
    st = model.status()
    rows = {r["name"]: r for r in st["nodes"]}  # type: ignore[union-attr, index]
    assert rows["n0"]["served"] == 3 and rows["n0"]["p50_latency_s"] is not None


async def test_request_waits_for_a_cooling_node_within_queue_timeout() -> None:
    pol = CallPolicy(backoff_base_s=0.001, backoff_max_s=0.01, queue_timeout_s=5.0)
    model, _ = cluster(Behaviour(), policy=pol)
    node = model.router.get("n0")
    node.breaker.cooldown_s = 0.05
    node.breaker.force_open()  # only node, cooling down for ~50 ms
    events = await collect(model)
    assert text_of(events) == ANSWER
    assert node.breaker.state is BreakerState.CLOSED  # the request was its half-open trial


async def test_fails_fast_when_no_node_can_recover_in_time() -> None:
    pol = CallPolicy(backoff_base_s=0.001, backoff_max_s=0.01, queue_timeout_s=0.5)
    model, _ = cluster(Behaviour(), policy=pol)
    model.router.get("n0").breaker.force_open()  # cooldown 30 s > queue timeout
    with pytest.raises(ClusterError, match="no node is available"):
        await collect(model)
    model.router.drain("n0")
    with pytest.raises(ClusterError):
        await collect(model)


async def test_cut_after_the_whole_answer_was_shown_adds_nothing() -> None:
    # the node streamed every token, then died before its finish: the replay reproduces
    # exactly what was shown, so the client gets nothing twice (found by bench chaos run)
    model, fakes = cluster(Behaviour(fail="cut", cut_after=6), Behaviour())
    model.router.get("n1").in_flight = 5
    events = await collect(model)
    assert text_of(events) == ANSWER
    assert model.history[-1].mode == "replay" and model.history[-1].failovers == 1
    assert [e.reason for e in events if isinstance(e, Finish)] == ["stop"]


async def test_first_request_waits_briefly_for_discovery() -> None:
    from bastion.cluster.service import ClusterService

    router = Router()
    fake = FakeNodeModel("late", Behaviour())

    class LateDiscovery(ClusterService):
        discovers = True

        async def start(self) -> None:
            async def arrive() -> None:
                await asyncio.sleep(0.2)
                router.add(NodeSpec("late", "http://late:1"), source="mdns")

            self.task = asyncio.get_running_loop().create_task(arrive())

    model = ClusterModel(
        router, lambda s, m: fake, model_name="m", tier="small", services=[LateDiscovery()]
    )
    events = await collect(model)
    assert text_of(events) == ANSWER and model.history[-1].nodes == ["late"]

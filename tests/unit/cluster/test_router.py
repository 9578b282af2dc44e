from __future__ import annotations

import pytest

from bastion.cluster.breaker import BreakerState
from bastion.cluster.node import NodeSpec
from bastion.cluster.router import BreakerSettings, Router, tier_chain
from bastion.errors import ConfigError, NotFoundError


def spec(name: str, tier: str = "small", **kw: object) -> NodeSpec:
    return NodeSpec(name=name, url=f"http://{name}:1", tier=tier, **kw)  # type: ignore[arg-type]


def test_tier_chain_prefers_larger_then_smaller() -> None:
    assert tier_chain("small") == ["small", "medium", "large"]
    assert tier_chain("medium") == ["medium", "large", "small"]
    assert tier_chain("large") == ["large", "medium", "small"]


def test_picks_least_loaded_weighted_and_round_robins_ties() -> None:
    r = Router()
    a, b = r.add(spec("a")), r.add(spec("b", weight=2.0))
    a.in_flight, b.in_flight = 1, 1  # b has weight 2: 0.5 < 1
    assert r.pick("small", None, 100).name == "b"  # type: ignore[union-attr]
    a.in_flight = b.in_flight = 0
    picks = {r.pick("small", None, 100).name for _ in range(4)}  # type: ignore[union-attr]
    assert picks == {"a", "b"}


def test_filters_model_context_tier_fallback_and_drain() -> None:
    r = Router()
    r.add(spec("small1", models=("m1",), max_context=2048))
    r.add(spec("big", tier="large", models=("m1", "m2"), max_context=32768))
    assert r.pick("small", "m1", 1000).name == "small1"  # type: ignore[union-attr]
    assert r.pick("small", "m1", 4000).name == "big"  # type: ignore[union-attr]  # context
    assert r.pick("small", "m2", 100).name == "big"  # type: ignore[union-attr]  # model
    assert r.pick("small", "m3", 100) is None
    r.drain("big")
    assert r.pick("small", "m2", 100) is None
    r.drain("big", on=False)
    r.get("small1").breaker.force_open()
    assert r.pick("small", "m1", 100).name == "big"  # type: ignore[union-attr]  # tier down


def test_failed_node_is_demoted_immediately() -> None:
    r = Router(BreakerSettings(threshold=3))
    a, b = r.add(spec("a")), r.add(spec("b"))
    a.breaker.record_failure()  # one soft failure: still closed, but suspect
    assert a.breaker.state is BreakerState.CLOSED
    for _ in range(5):
        assert r.pick("small", None, 10) is b
    assert r.pick("small", None, 10, exclude={"b"}) is a  # still a fallback


def test_half_open_gives_a_single_trial() -> None:
    r = Router(BreakerSettings(threshold=1, cooldown_s=0.0001))
    a = r.add(spec("a"))
    a.breaker.record_failure(hard=True)
    import time

    time.sleep(0.001)
    assert r.pick("small", None, 10) is a
    assert r.pick("small", None, 10) is None  # the trial is taken


def test_membership_errors_and_listeners() -> None:
    r = Router()
    events: list[tuple[str, str]] = []
    r.listeners.append(lambda what, n: events.append((what, n.name)))
    r.add(spec("a"))
    with pytest.raises(ConfigError):
        r.add(spec("a"))
    r.add(spec("a", tier="large"), replace=True)
    assert r.get("a").spec.tier == "large"
    r.remove("a")
    with pytest.raises(NotFoundError):
        r.remove("a")
    assert events == [("added", "a"), ("updated", "a"), ("removed", "a")]

from __future__ import annotations

import random

from bastion.cluster.breaker import BreakerState, CircuitBreaker
from bastion.cluster.retry import Backoff


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(threshold: int = 3) -> tuple[CircuitBreaker, Clock, list[tuple[str, str]]]:
    clock = Clock()
    seen: list[tuple[str, str]] = []
    b = CircuitBreaker(
        threshold,
        cooldown_s=1.0,
        max_cooldown_s=4.0,
        clock=clock,
        on_transition=lambda a, c: seen.append((a.value, c.value)),
        rng=random.Random(1),
    )
    return b, clock, seen


def test_soft_failures_open_after_threshold() -> None:
    b, _, seen = make(3)
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.allows_traffic()
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allows_traffic()
    assert seen == [("closed", "open")]


def test_hard_failure_opens_at_once_and_success_resets() -> None:
    b, _, _ = make(3)
    b.record_failure()
    b.record_success()
    assert b.failures == 0
    b.record_failure(hard=True)
    assert b.state is BreakerState.OPEN


def test_half_open_single_probe_then_close() -> None:
    b, clock, seen = make()
    b.record_failure(hard=True)
    clock.t = 0.5
    assert b.state is BreakerState.OPEN and b.retry_in() > 0
    clock.t = 1.3  # cooldown 1 s +-20 %
    assert b.state is BreakerState.HALF_OPEN
    assert b.begin_probe()
    assert not b.begin_probe()  # exactly one trial
    assert not b.allows_traffic()
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_failed_probe_reopens_with_longer_cooldown_capped() -> None:
    b, clock, _ = make()
    b.record_failure(hard=True)
    waits = []
    for _ in range(5):
        waits.append(b.retry_in())
        clock.t += 10
        assert b.begin_probe()
        b.record_failure()  # a failed half-open trial re-opens regardless of threshold
        assert b.state is BreakerState.OPEN
    assert waits[1] > waits[0] * 1.3
    assert max(waits) <= 4.0 * 1.2


def test_backoff_full_jitter_bounds() -> None:
    bo = Backoff(0.1, 1.0, random.Random(3))
    for n in range(8):
        for _ in range(50):
            d = bo.delay(n)
            assert 0 <= d <= min(1.0, 0.1 * 2**n)
    assert Backoff(0, 1).delay(3) == 0

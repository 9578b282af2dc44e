"""Circuit breaker for one node: closed -> open -> half-open -> closed.

A *hard* failure (connection refused or reset, a stream cut by a dead process) opens the
breaker at once: the node is gone, and the next request must not pay for finding that out
again (the LiteLLM #40405 trap). *Soft* failures (5xx, timeouts, malformed streams) open it
after ``threshold`` in a row. An open breaker waits a cooldown (doubling on each re-open,
with jitter, capped) and then lets exactly one probe through (half-open); its success
closes the breaker, its failure re-opens it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    """The three breaker states."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


TransitionHook = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Consecutive-failure breaker with exponential, jittered cooldowns.

    Args:
        threshold: soft failures in a row that open the breaker.
        cooldown_s: first wait before a half-open probe.
        max_cooldown_s: cap of the doubling cooldown.
        clock: monotonic clock (tests pass a fake).
        on_transition: called with (old, new) on every state change.

    """

    def __init__(
        self,
        threshold: int = 3,
        cooldown_s: float = 5.0,
        max_cooldown_s: float = 120.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._hook = on_transition
        self._rng = rng or random.Random()
        self._state = BreakerState.CLOSED
        self.failures = 0  # consecutive failures since the last success
        self.opens = 0  # consecutive opens without a success (drives the cooldown growth)
        self._retry_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """Current state; an open breaker whose cooldown ran out reads as half-open."""
        if self._state is BreakerState.OPEN and self._clock() >= self._retry_at:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker allows a probe (0 when not open)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._retry_at - self._clock())

    def allows_traffic(self) -> bool:
        """Return True when a request may be sent now (closed, or half-open and no probe)."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probing
        )

    def begin_probe(self) -> bool:
        """Claim the single half-open trial; False when closed-state traffic or taken."""
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def end_probe(self) -> None:
        """Release a half-open trial that ended without a verdict (e.g. cancelled)."""
        self._probing = False

    def record_success(self) -> None:
        """Record a successful call: reset counters and close."""
        self.failures = 0
        self.opens = 0
        self._probing = False
        if self._state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED)

    def record_failure(self, *, hard: bool = False) -> None:
        """Record a failed call; ``hard`` (node unreachable or died) opens at once."""
        self.failures += 1
        self._probing = False
        state = self.state
        if state is BreakerState.HALF_OPEN or hard or self.failures >= self.threshold:
            self._open()

    def force_open(self) -> None:
        """Open now (used when a node is drained or known dead)."""
        self._open()

    def _open(self) -> None:
        self.opens += 1
        base = min(self.max_cooldown_s, self.cooldown_s * (2 ** (self.opens - 1)))
        # +-20 % jitter so probes of many routers do not hit a recovering node in lock-step
        self._retry_at = self._clock() + base * self._rng.uniform(0.8, 1.2)
        if self._state is not BreakerState.OPEN:
            self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if self._hook is not None and old is not new:
            self._hook(old, new)

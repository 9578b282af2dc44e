"""Exponential backoff with full jitter (AWS blog: "Exponential Backoff And Jitter")."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays for retry rounds: ``uniform(0, min(cap, base * 2**n))``.

    The router retries on a *different* healthy node with no delay; a backoff delay is only
    paid when every candidate was tried in a round (all nodes failing), so a single dead
    node never slows the requests that a healthy node can serve.
    """

    base_s: float = 0.1
    cap_s: float = 2.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, round_no: int) -> float:
        """Return the wait before retry round ``round_no`` (0-based)."""
        if self.base_s <= 0 or self.cap_s <= 0:
            return 0.0
        return self.rng.uniform(0.0, min(self.cap_s, self.base_s * (2**round_no)))

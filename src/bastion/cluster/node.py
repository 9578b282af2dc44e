"""A node: one model server (llama.cpp, vLLM, Ollama, any OpenAI-compatible, another bastion)."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from bastion.cluster.breaker import BreakerState, CircuitBreaker
from bastion.config.model import ClusterNodeConfig, Engine

Tier = Literal["small", "medium", "large"]
TIERS: tuple[Tier, ...] = ("small", "medium", "large")
Source = Literal["config", "runtime", "mdns"]


@dataclass(slots=True, frozen=True)
class NodeSpec:
    """What a node is: where it lives and what it can serve (immutable)."""

    name: str
    url: str  # server root without /v1
    engine: Engine = "openai"
    tier: Tier = "small"
    models: tuple[str, ...] = ()
    max_context: int = 4096
    token: str | None = None
    weight: float = 1.0

    @property
    def api_base(self) -> str:
        """The OpenAI-compatible base URL (every supported engine serves ``/v1``)."""
        return self.url + "/v1"

    def serves(self, model: str | None) -> bool:
        """Return True when the node can answer for ``model`` (empty list: any)."""
        return not self.models or model is None or model in self.models

    @classmethod
    def from_config(cls, cfg: ClusterNodeConfig) -> NodeSpec:
        """Build a spec from a ``cluster.nodes`` entry."""
        return cls(
            name=cfg.name,
            url=normalise_url(cfg.url),
            engine=cfg.engine,
            tier=cfg.tier,
            models=tuple(cfg.models),
            max_context=cfg.max_context,
            token=cfg.token.get_secret_value() if cfg.token else None,
            weight=cfg.weight,
        )


def normalise_url(url: str) -> str:
    """Return the server root: no trailing slash, no trailing ``/v1``."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass
class Node:
    """A node's live state: health, breaker, load and latency history."""

    spec: NodeSpec
    breaker: CircuitBreaker
    source: Source = "config"
    draining: bool = False
    healthy: bool | None = None  # None = not checked yet
    last_check: float = 0.0
    last_error: str = ""
    unreachable_since: float | None = None
    in_flight: int = 0
    served: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    tokens_per_s: float = 0.0  # EWMA of completion speed

    @property
    def name(self) -> str:
        """The node's unique name."""
        return self.spec.name

    def usable(self) -> bool:
        """Return True when the router may send a request now."""
        return not self.draining and self.breaker.allows_traffic()

    def p50_latency(self) -> float | None:
        """Median duration of the recent calls, in seconds."""
        return statistics.median(self.latencies) if self.latencies else None

    def record_speed(self, tokens: int, seconds: float) -> None:
        """Fold one call's completion speed into the EWMA."""
        if tokens <= 0 or seconds <= 0:
            return
        speed = tokens / seconds
        self.tokens_per_s = (
            speed if not self.tokens_per_s else 0.8 * self.tokens_per_s + 0.2 * speed
        )

    def status(self) -> dict[str, object]:
        """Return a plain dict for the CLI table and the API."""
        p50 = self.p50_latency()
        state = self.breaker.state
        return {
            "name": self.name,
            "url": self.spec.url,
            "engine": self.spec.engine,
            "tier": self.spec.tier,
            "models": list(self.spec.models),
            "max_context": self.spec.max_context,
            "weight": self.spec.weight,
            "source": self.source,
            "healthy": self.healthy,
            "breaker": state.value,
            "draining": self.draining,
            "in_flight": self.in_flight,
            "served": self.served,
            "p50_latency_s": round(p50, 4) if p50 is not None else None,
            "tokens_per_s": round(self.tokens_per_s, 1),
            "last_error": self.last_error,
            "retry_in_s": round(self.breaker.retry_in(), 2) if state is BreakerState.OPEN else 0,
        }


def now() -> float:
    """Return the monotonic clock the cluster uses."""
    return time.monotonic()

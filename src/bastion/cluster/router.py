"""Node registry and selection: tier, model, context fit, health, breaker, load."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bastion.cluster.breaker import BreakerState, CircuitBreaker
from bastion.cluster.metrics import ClusterMetrics
from bastion.cluster.node import TIERS, Node, NodeSpec, Source, Tier
from bastion.errors import ConfigError, NotFoundError

_STATE_CODE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(slots=True, frozen=True)
class BreakerSettings:
    """How breakers of new nodes behave."""

    threshold: int = 3
    cooldown_s: float = 5.0
    max_cooldown_s: float = 120.0


def tier_chain(preferred: Tier) -> list[Tier]:
    """Fallback order: the preferred tier, larger ones (ascending), then smaller (descending)."""
    i = TIERS.index(preferred)
    return [preferred, *TIERS[i + 1 :], *reversed(TIERS[:i])]


class Router:
    """Holds the nodes and picks one per attempt.

    Ranking inside a tier: closed breakers before half-open ones, nodes without a recent
    failure before nodes with one (so after a node fails, the next requests go straight to
    a healthy node instead of paying for the failure again), then the lowest
    ``in_flight / weight``, then round-robin among equals.
    """

    def __init__(
        self,
        breaker: BreakerSettings | None = None,
        metrics: ClusterMetrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.breaker_settings = breaker or BreakerSettings()
        self.metrics = metrics or ClusterMetrics()
        self.nodes: dict[str, Node] = {}
        self._clock = clock
        self._rr = 0
        self.listeners: list[Callable[[str, Node], None]] = []  # added|updated|removed

    # ---- membership -------------------------------------------------------------------
    def add(self, spec: NodeSpec, *, source: Source = "runtime", replace: bool = False) -> Node:
        """Register a node; ``replace`` swaps the spec of an existing one (keeping state)."""
        old = self.nodes.get(spec.name)
        if old is not None:
            if not replace:
                raise ConfigError(
                    f"node {spec.name} already exists", fix="pick another name or remove it first"
                )
            if old.spec != spec:
                old.spec = spec
                for cb in self.listeners:
                    cb("updated", old)
            return old
        s = self.breaker_settings
        name = spec.name

        def hook(a: BreakerState, b: BreakerState) -> None:
            self.metrics.transitions.inc(node=name, from_state=a.value, to_state=b.value)
            self.metrics.breaker_state.set(_STATE_CODE[b], node=name)

        node = Node(
            spec,
            CircuitBreaker(
                s.threshold, s.cooldown_s, s.max_cooldown_s, clock=self._clock, on_transition=hook
            ),
            source=source,
        )
        self.nodes[name] = node
        self.metrics.breaker_state.set(0, node=name)
        self.metrics.in_flight.set(0, node=name)
        for cb in self.listeners:
            cb("added", node)
        return node

    def remove(self, name: str) -> Node:
        """Unregister a node (calls in flight on it finish or fail over)."""
        node = self.nodes.pop(name, None)
        if node is None:
            raise NotFoundError(f"no node named {name}", fix="list nodes: bastion cluster status")
        self.metrics.forget_node(name)
        for cb in self.listeners:
            cb("removed", node)
        return node

    def drain(self, name: str, on: bool = True) -> Node:
        """Stop (or resume) sending new requests to a node; calls in flight finish."""
        node = self.get(name)
        node.draining = on
        return node

    def get(self, name: str) -> Node:
        """Return a node by name."""
        node = self.nodes.get(name)
        if node is None:
            raise NotFoundError(f"no node named {name}", fix="list nodes: bastion cluster status")
        return node

    # ---- selection --------------------------------------------------------------------
    def eligible(self, model: str | None, need_ctx: int) -> Iterator[Node]:
        """Nodes that could ever serve this request (model and context), whatever their state."""
        for node in self.nodes.values():
            if node.spec.serves(model) and node.spec.max_context >= need_ctx:
                yield node

    def ranked(
        self, tier: Tier, model: str | None, need_ctx: int, exclude: set[str] | frozenset[str]
    ) -> list[Node]:
        """Usable candidates in preference order across the tier fallback chain."""
        self._rr += 1
        rr = self._rr
        order = {t: i for i, t in enumerate(tier_chain(tier))}
        names = list(self.nodes)
        n = len(names) or 1
        scored: list[tuple[tuple[float, ...], Node]] = []
        for pos, name in enumerate(names):
            node = self.nodes[name]
            if name in exclude or not node.usable():
                continue
            spec = node.spec
            if not spec.serves(model) or spec.max_context < need_ctx:
                continue
            state = node.breaker.state
            key = (
                float(order[spec.tier]),
                float(state is not BreakerState.CLOSED),
                float(node.breaker.failures > 0 or node.healthy is False),
                node.in_flight / spec.weight,
                float((pos - rr) % n),
            )
            scored.append((key, node))
        scored.sort(key=lambda kv: kv[0])
        return [node for _, node in scored]

    def pick(
        self,
        tier: Tier,
        model: str | None,
        need_ctx: int,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> Node | None:
        """Return the best node now (claiming the half-open trial if it is one), or None."""
        for node in self.ranked(tier, model, need_ctx, exclude):
            if node.breaker.state is BreakerState.HALF_OPEN and not node.breaker.begin_probe():
                continue
            return node
        return None

    def status(self) -> list[dict[str, object]]:
        """Status rows for every node."""
        return [node.status() for node in self.nodes.values()]

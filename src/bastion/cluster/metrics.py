"""Cluster metrics kept in process, rendered in the Prometheus text exposition format.

The registry primitives live in :mod:`bastion.telemetry.prometheus` (shared with the process
metrics); they are re-exported here for existing imports.
"""

from __future__ import annotations

from bastion.telemetry.prometheus import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    Counter,
    Gauge,
    Histogram,
    LabelKey,
    Metric,
    render,
)

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "ClusterMetrics", "Counter", "Gauge", "Histogram",
           "LabelKey"]


class ClusterMetrics:
    """Every metric the cluster exports (names prefixed ``bastion_cluster_``)."""

    def __init__(self) -> None:
        p = "bastion_cluster_"
        self.requests = Counter(p + "requests_total", "Model calls sent to a node, by outcome.")
        self.errors = Counter(p + "errors_total", "Failed node calls, by kind of failure.")
        self.latency = Histogram(p + "request_duration_seconds", "Node call duration.")
        self.first_token = Histogram(
            p + "first_token_seconds", "Time from sending a call to its first event."
        )
        self.tokens = Counter(p + "tokens_total", "Tokens processed, by direction.")
        self.transitions = Counter(
            p + "breaker_transitions_total", "Circuit breaker state changes per node."
        )
        self.breaker_state = Gauge(
            p + "breaker_state", "Breaker state per node (0 closed, 1 half-open, 2 open)."
        )
        self.in_flight = Gauge(p + "in_flight", "Calls in progress per node.")
        self.healthy = Gauge(p + "node_healthy", "Last health check result per node (1 ok).")
        self.failovers = Counter(p + "failovers_total", "Requests moved to another node, by mode.")
        self.routed = Counter(
            p + "routed_total", "Client requests routed, by tier asked and final outcome."
        )
        self.all: list[Metric] = [
            self.requests,
            self.errors,
            self.latency,
            self.first_token,
            self.tokens,
            self.transitions,
            self.breaker_state,
            self.in_flight,
            self.healthy,
            self.failovers,
            self.routed,
        ]

    def forget_node(self, node: str) -> None:
        """Drop the gauges of a removed node (counters keep their history)."""
        for gauge in (self.breaker_state, self.in_flight, self.healthy):
            gauge.remove(node=node)

    def render(self) -> str:
        """Return the whole registry in Prometheus text format (version 0.0.4)."""
        return render(self.all)


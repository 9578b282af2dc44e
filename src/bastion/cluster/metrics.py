"""Cluster metrics kept in process and rendered in the Prometheus text exposition format.

A small dependency-free registry: counters, gauges and histograms with label sets. Updates
are plain dict/list operations on the event loop thread (no locks needed: asyncio).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

LabelKey = tuple[tuple[str, str], ...]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(key: LabelKey, extra: Iterable[tuple[str, str]] = ()) -> str:
    items = [*key, *extra]
    if not items:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing value per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self.values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the series named by ``labels``."""
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        """Return the current value of one series (0 when never touched)."""
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        """Return exposition lines."""
        return [f"{self.name}{_labels(k)} {_num(v)}" for k, v in sorted(self.values.items())]


class Gauge(Counter):
    """A value that goes up and down per label set."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        """Set the series named by ``labels``."""
        self.values[tuple(sorted(labels.items()))] = value

    def remove(self, **labels: str) -> None:
        """Forget the series named by ``labels``."""
        self.values.pop(tuple(sorted(labels.items())), None)


class Histogram(_Metric):
    """Cumulative-bucket histogram per label set."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        super().__init__(name, help_text)
        self.buckets = buckets
        self.series: dict[LabelKey, list[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation."""
        key = tuple(sorted(labels.items()))
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0.0] * (len(self.buckets) + 3)  # buckets, +Inf, sum, count
        row[bisect.bisect_left(self.buckets, value)] += 1  # non-cumulative; summed on render
        row[-2] += value
        row[-1] += 1

    def count(self, **labels: str) -> int:
        """Return the number of observations of one series."""
        row = self.series.get(tuple(sorted(labels.items())))
        return int(row[-1]) if row else 0

    def render(self) -> list[str]:
        """Return exposition lines (cumulative buckets, +Inf, sum, count)."""
        out: list[str] = []
        for key, row in sorted(self.series.items()):
            acc = 0.0
            for i, bound in enumerate((*self.buckets, math.inf)):
                acc += row[i]
                out.append(f"{self.name}_bucket{_labels(key, [('le', _num(bound))])} {_num(acc)}")
            out.append(f"{self.name}_sum{_labels(key)} {_num(row[-2])}")
            out.append(f"{self.name}_count{_labels(key)} {_num(row[-1])}")
        return out


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
        self.all: list[_Metric] = [
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
        lines: list[str] = []
        for metric in self.all:
            lines.extend(metric.header())
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

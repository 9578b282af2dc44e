"""Prometheus text exposition without a dependency: counters, gauges, histograms with labels.

Updates are plain dict/list operations on the event loop thread (no locks needed: asyncio).
Both the process metrics (:mod:`bastion.telemetry.metrics`) and the cluster's are built on it.
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


class Metric:
    """A named metric with help text; subclasses render their series."""

    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text

    def header(self) -> list[str]:
        """Return the HELP and TYPE lines."""
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        """Return the exposition lines of every series."""
        raise NotImplementedError


class Counter(Metric):
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


class Histogram(Metric):
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


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(metrics: Iterable[Metric]) -> str:
    """Return ``metrics`` in Prometheus text format (version 0.0.4)."""
    lines: list[str] = []
    for metric in metrics:
        lines.extend(metric.header())
        lines.extend(metric.render())
    return "\n".join(lines) + "\n"

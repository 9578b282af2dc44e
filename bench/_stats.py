"""Percentiles and the one-line summary the latency benches print (bench/gateway.py, auth.py)."""

from __future__ import annotations

import statistics


def pct(values: list[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) of ``values``: the nearest rank, never interpolated."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(label: str, ms: list[float], *, width: int = 34, digits: int = 3) -> str:
    """Return ``label  p50 ... ms   p99 ... ms   n=...`` for samples in milliseconds."""
    return (f"{label:<{width}} p50 {statistics.median(ms):8.{digits}f} ms   "
            f"p99 {pct(ms, 0.99):8.{digits}f} ms   n={len(ms)}")

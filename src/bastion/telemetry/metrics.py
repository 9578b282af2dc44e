"""Process-wide metrics (turns, tool calls, approvals, sandboxes, tokens, queue), always on.

Served on ``GET /metrics`` with the cluster's when there is one. Updating one is a dict
operation on the event loop thread, so call sites do it unconditionally.
"""

from __future__ import annotations

from bastion.telemetry.prometheus import Counter, Gauge, Histogram, Metric, render

WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)


class ProcessMetrics:
    """Every process metric (names prefixed ``bastion_``)."""

    def __init__(self) -> None:
        self.turns = Counter("bastion_turns_total", "Agent turns finished, by outcome.")
        self.turns_active = Gauge("bastion_turns_in_progress", "Agent turns running now.")
        self.tool_calls = Counter(
            "bastion_tool_calls_total", "Gateway calls, by tool and decision."
        )
        self.tool_duration = Histogram(
            "bastion_tool_call_duration_seconds", "Gateway call duration, by tool."
        )
        self.approval_wait = Histogram(
            "bastion_approval_wait_seconds", "Time a call waited for a human, by outcome.",
            WAIT_BUCKETS,
        )
        self.sandbox_start = Histogram(
            "bastion_sandbox_start_seconds", "Time to start a sandboxed process, by backend."
        )
        self.tokens = Counter("bastion_model_tokens_total", "Tokens processed, by direction.")
        self.tokens_per_second = Histogram(
            "bastion_model_tokens_per_second", "Generated tokens per second of each model call.",
            RATE_BUCKETS,
        )
        self.queue_depth = Gauge(
            "bastion_model_queue_depth", "Model calls waiting for a free model slot."
        )
        self.all: list[Metric] = [
            self.turns, self.turns_active, self.tool_calls, self.tool_duration,
            self.approval_wait, self.sandbox_start, self.tokens, self.tokens_per_second,
            self.queue_depth,
        ]

    def render(self) -> str:
        """Return every process metric in Prometheus text format."""
        return render(self.all)


#: The process's metrics (one registry per process, like the Prometheus default registry).
METRICS = ProcessMetrics()

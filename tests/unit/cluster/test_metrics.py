from __future__ import annotations

import re

from bastion.cluster.metrics import ClusterMetrics


def test_prometheus_text_format() -> None:
    m = ClusterMetrics()
    m.requests.inc(node="a", outcome="ok")
    m.requests.inc(node="a", outcome="ok")
    m.errors.inc(node='we"ird', kind="hard")
    m.latency.observe(0.02, node="a")
    m.latency.observe(3.0, node="a")
    m.latency.observe(100.0, node="a")
    m.transitions.inc(node="a", from_state="closed", to_state="open")
    text = m.render()
    assert text.endswith("\n")
    assert "# TYPE bastion_cluster_requests_total counter" in text
    assert 'bastion_cluster_requests_total{node="a",outcome="ok"} 2' in text
    assert 'bastion_cluster_errors_total{kind="hard",node="we\\"ird"} 1' in text
    assert "# TYPE bastion_cluster_request_duration_seconds histogram" in text
    assert 'bastion_cluster_request_duration_seconds_bucket{node="a",le="0.025"} 1' in text
    assert 'bastion_cluster_request_duration_seconds_bucket{node="a",le="5"} 2' in text
    assert 'bastion_cluster_request_duration_seconds_bucket{node="a",le="+Inf"} 3' in text
    assert 'bastion_cluster_request_duration_seconds_count{node="a"} 3' in text
    assert (
        'bastion_cluster_breaker_transitions_total{from_state="closed",node="a",to_state="open"} 1'
        in text
    )
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="([^"\\]|\\.)*"(,[a-z_]+="([^"\\]|\\.)*")*\})? \S+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line


def test_cumulative_buckets_monotonic() -> None:
    m = ClusterMetrics()
    for v in (0.001, 0.2, 0.2, 7.0):
        m.first_token.observe(v, node="n")
    counts = [float(line.rsplit(" ", 1)[1]) for line in m.first_token.render() if "_bucket" in line]
    assert counts == sorted(counts) and counts[-1] == 4

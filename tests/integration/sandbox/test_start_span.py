"""A cold sandboxed call is a ``sandbox.start`` span and a sample of the start-time metric."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion import telemetry
from bastion.config.model import LimitsConfig
from bastion.security.sandbox.factory import create_sandbox
from bastion.telemetry.metrics import METRICS
from tests._dockerd import backend_problem
from tests.fakes.otlp_receiver import OtlpReceiver, children, one


@pytest.mark.parametrize("kind", ["bubblewrap", "gvisor", "podman", "docker"])
async def test_cold_start_is_timed_per_backend(kind: str, tmp_path: Path) -> None:
    problem = backend_problem(kind)  # docker: on the tests' own daemon (tests/_dockerd.py)
    if problem:
        pytest.skip(problem)
    box, why = create_sandbox(kind, tmp_path, LimitsConfig())
    assert box is not None, why
    before = METRICS.sandbox_start.count(backend=kind)
    with OtlpReceiver() as receiver:
        telemetry.configure(receiver.endpoint)
        try:
            with telemetry.span("tool"):
                res = await box.run(["/bin/true"])
        finally:
            telemetry.shutdown()
        spans = receiver.wait_for(lambda s: len(s) >= 2)
    assert res.exit_code == 0, res.stderr
    start = one(spans, "sandbox.start")
    assert children(spans, one(spans, "tool")) == [start]
    assert start.attributes["bastion.sandbox.backend"] == kind
    assert METRICS.sandbox_start.count(backend=kind) == before + 1

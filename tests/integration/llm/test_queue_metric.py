"""bastion_model_queue_depth counts model calls waiting for a free worker (shipped model)."""

from __future__ import annotations

import asyncio

import pytest

from bastion.llm.worker import WorkerModel
from bastion.telemetry.metrics import METRICS
from tests.integration.llm.test_worker import _stream

pytestmark = [pytest.mark.real_model]
pytest.importorskip("llama_cpp")


async def test_calls_waiting_for_the_one_slot_are_the_queue_depth() -> None:
    model = WorkerModel.load(n_ctx=512, slots=1)
    try:
        started = asyncio.Event()
        first = asyncio.ensure_future(_stream(model, 48, started))
        await started.wait()  # the only worker is busy from here on
        waiting = [asyncio.ensure_future(_stream(model, 2)) for _ in range(2)]
        seen = 0.0
        for _ in range(500):
            seen = max(seen, METRICS.queue_depth.get(model=model.name))
            if seen == 2 or first.done():
                break
            await asyncio.sleep(0.01)
        assert seen == 2
        assert f'bastion_model_queue_depth{{model="{model.name}"}}' in METRICS.render()
        await asyncio.gather(first, *waiting)
        assert METRICS.queue_depth.get(model=model.name) == 0
    finally:
        await model.aclose()

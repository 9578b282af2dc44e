"""Tracing on/off in one run: a real OTLP receiver on loopback and a switch between calls.

Both benches alternate the same work with traces off (the shipped default: the no-op path)
and on (the SDK's batch exporter sending to the receiver), so load drift hits both alike.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@contextmanager
def switchable_tracing() -> Iterator[Callable[[bool], None]]:
    """Yield ``switch(on)``; traces go to a test OTLP receiver while on."""
    from tests.fakes.otlp_receiver import OtlpReceiver

    import bastion.telemetry as telemetry

    with OtlpReceiver() as receiver:
        assert telemetry.configure(receiver.endpoint)
        live = telemetry._tracing

        def switch(on: bool) -> None:
            telemetry._tracing = live if on else None

        try:
            yield switch
        finally:
            switch(True)
            telemetry.shutdown()
        print(f"(the receiver got {len(receiver.spans)} spans)")

"""Tracing on/off in one run: a real OTLP receiver on loopback and a switch between calls.

Both benches alternate the same work with traces off (the shipped default: the no-op path)
and on (the SDK's batch exporter sending to the receiver), so load drift hits both alike.
The receiver runs in its own process, as a collector is another process or machine: inside
the benchmark's process its request handling (protobuf decoding) would compete with the work
under test for the GIL and be charged to tracing.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_RECEIVER = ("import sys; sys.path.insert(0, sys.argv[1]);"
             "from tests.fakes.otlp_receiver import OtlpReceiver;"
             "r = OtlpReceiver(); r.__enter__(); print(r.endpoint, flush=True);"
             "sys.stdin.read(); print(len(r.spans), flush=True); r.__exit__(None, None, None)")


@contextmanager
def switchable_tracing() -> Iterator[Callable[[bool], None]]:
    """Yield ``switch(on)``; traces go to a test OTLP receiver (its own process) while on."""
    import bastion.telemetry as telemetry

    proc = subprocess.Popen([sys.executable, "-c", _RECEIVER, str(ROOT)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        endpoint = proc.stdout.readline().strip()
        if not endpoint:
            sys.exit("the OTLP receiver did not start")
        assert telemetry.configure(endpoint)
        live = telemetry._tracing

        def switch(on: bool) -> None:
            telemetry._tracing = live if on else None

        try:
            yield switch
        finally:
            switch(True)
            telemetry.shutdown()  # flushes what is left to the receiver
        proc.stdin.close()
        print(f"(the receiver got {proc.stdout.readline().strip()} spans)")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

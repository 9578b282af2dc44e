"""Trace context reaches an MCP server over streamable HTTP (``_meta.traceparent``, SEP-414)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion import telemetry
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.integration.mcp.conftest import free_port

pytest.importorskip("mcp")
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.mcp_trace_server", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def _echo(url: str) -> dict[str, object]:
    from bastion.mcp.toolset import MCPConnection, ServerSpec

    conn = MCPConnection(ServerSpec("traced", url=url, timeout_s=30))
    conn.start()
    try:
        out = await conn.call("echo_trace", {})
    finally:
        conn.close()
    result: dict[str, object] = json.loads(out.text)
    return result


async def test_mcp_http_call_carries_the_callers_trace(mcp_url: str) -> None:
    with OtlpReceiver() as receiver:
        telemetry.configure(receiver.endpoint)
        try:
            with telemetry.span("caller") as span:
                seen = await _echo(mcp_url)
                ctx = span.raw.get_span_context()  # type: ignore[attr-defined]
        finally:
            telemetry.shutdown()
    version, trace_id, parent_id, _flags = str(seen["meta"]["traceparent"]).split("-")  # type: ignore[index]
    assert (version, trace_id, parent_id) == ("00", f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")


async def test_no_trace_context_when_traces_are_off(mcp_url: str) -> None:
    assert not telemetry.enabled()
    seen = await _echo(mcp_url)
    assert seen["meta"] == {}

"""F19 attacks on the Wyoming server (no authentication, reachable by Home Assistant's LAN):
an audio chunk claiming a 1 Hz rate (converted to 16 kHz: 16000 times the bytes) and an event
claiming a huge ``payload_length`` must be refused at once, with the server's peak memory
unmoved; a peer outside ``--allow`` gets nothing. Run against ``bastion voice wyoming``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("wyoming")
from wyoming.audio import AudioChunk, AudioStart  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.error import Error  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402

from tests.integration.cluster._procs import stop_group  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _spawn(home: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(BASTION_HOME=str(home), PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "bastion", "voice", "wyoming",
                             "--port", str(port), *extra],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("bastion voice wyoming did not start")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    home = tmp_path_factory.mktemp("wyoming-home")
    port = _free_port()
    proc = _spawn(home, port)
    try:
        yield port, proc.pid
    finally:
        stop_group(proc)


async def _expect_refused(client: AsyncTcpClient, what: str) -> str:
    """The next thing the server says within 5 s must be an error event (or a hang-up)."""
    ev = await asyncio.wait_for(client.read_event(), 5)
    if ev is None:
        return "closed"
    assert Error.is_type(ev.type), f"{what}: the server answered {ev.type}"
    return Error.from_event(ev).text


async def test_one_hertz_chunk_is_refused_before_conversion(server: tuple[int, int]) -> None:
    port, pid = server
    before = _peak_kib(pid)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
        # 16 KiB claimed at 1 Hz: converting it first would make 256 MiB
        await client.write_event(
            AudioChunk(rate=1, width=2, channels=1, audio=b"\x01\x02" * 8192).event())
        text = await _expect_refused(client, "rate=1")
        grown = _peak_kib(pid) - before
        assert grown < 32 * 1024, f"peak memory grew by {grown} KiB"
        assert "rate" in text and "8000" in text, text
        for bad in ({"rate": 16_000, "width": 9, "channels": 1},
                    {"rate": 16_000, "width": 2, "channels": 64}):
            await client.write_event(AudioChunk(audio=b"\x00" * 64, **bad).event())
            assert await _expect_refused(client, str(bad)) != "closed"
        await client.write_event(Describe().event())  # the connection still works
        assert Info.is_type((await asyncio.wait_for(client.read_event(), 5)).type)
    grown = _peak_kib(pid) - before
    assert grown < 32 * 1024, f"peak memory grew by {grown} KiB"


async def test_huge_payload_length_is_refused_unread(server: tuple[int, int]) -> None:
    port, pid = server
    before = _peak_kib(pid)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = {"type": "audio-chunk", "data": {"rate": 16_000, "width": 2, "channels": 1},
                "payload_length": 1 << 34}  # 16 GiB promised
        writer.write(json.dumps(head).encode() + b"\n")
        answer = asyncio.ensure_future(reader.readline())  # read while we send
        t0 = time.monotonic()
        for _ in range(32):  # 32 MiB actually sent, as fast as the server takes it
            try:
                writer.write(b"\0" * (1 << 20))
                await asyncio.wait_for(writer.drain(), 2)
            except (ConnectionError, TimeoutError):
                break  # the server hung up (or stopped reading)
        line = await asyncio.wait_for(answer, 5)
        elapsed = time.monotonic() - t0
    finally:
        writer.close()
    assert line, "the server hung up without saying why"
    said = json.loads(line)
    assert said["type"] == "error", said
    assert elapsed < 10
    grown = _peak_kib(pid) - before
    assert grown < 16 * 1024, f"peak memory grew by {grown} KiB"


def test_peer_outside_allow_gets_nothing(tmp_path: Path) -> None:
    port = _free_port()
    proc = _spawn(tmp_path, port, "--allow", "10.9.8.0/24")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b'{"type": "describe"}\n')
            s.settimeout(5)
            assert s.recv(4096) == b""  # closed without an answer
    finally:
        stop_group(proc)

"""Attack: hostile documents and audio aimed at the native/complex parsers bastion runs.

PDF/HTML ingestion and audio decoding run in a child process with address-space, CPU, output
and wall-clock limits (``bastion.security.isolate``). Each attack here costs that one
document or request a clear error; the bastion process neither spends the CPU nor the memory,
and a live server keeps answering after its parser was killed by SIGSEGV.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import time
import wave
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from bastion.errors import AudioError, MemoryStoreError
from bastion.memory._chunk import extract_text
from bastion.security import isolate
from bastion.security.sandbox.base import Limits
from bastion.voice.audio import decode
from tests.integration.server.test_live_server import serving

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "parser-isolation-test-token-0123456789"


def _pdf(content: bytes) -> bytes:
    """A one-page PDF whose page content is ``content`` (FlateDecode)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content
            + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + obj + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objs) + 1, xref))
    return out.getvalue()


def operator_bomb_pdf() -> bytes:
    """59 KB that inflate to 60 MB of no-op operators: pypdf spends ~40 s of CPU on them."""
    c = zlib.compressobj(9)
    z = c.compress(b"BT /F1 12 Tf 72 712 Td (hello) Tj ET\n")
    chunk = b"q Q " * 250_000
    for _ in range(60):
        z += c.compress(chunk)
    return _pdf(z + c.flush())


def _wav(seconds: float, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        t = np.arange(int(seconds * rate)) / rate
        w.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())
    return buf.getvalue()


def test_pdf_that_makes_the_parser_spin_costs_one_document(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(isolate, "DEFAULT_LIMITS", replace(isolate.DEFAULT_LIMITS, cpu_seconds=2))
    bomb = operator_bomb_pdf()
    assert len(bomb) < 100_000
    cpu0, t0 = time.process_time(), time.monotonic()
    with pytest.raises(MemoryStoreError) as info:
        extract_text(bomb, "pdf")
    assert "PDF parser used more than 2 s of CPU" in info.value.message
    assert time.process_time() - cpu0 < 1.5  # the spinning happened elsewhere
    assert time.monotonic() - t0 < 30
    # an honest PDF still reads, through the same child
    assert "hello" in extract_text(_pdf(zlib.compress(b"BT /F1 12 Tf 72 712 Td (hello) Tj ET")),
                                   "pdf")


@pytest.mark.parametrize(("fault", "limits", "why"), [
    ("segv", isolate.DEFAULT_LIMITS, "crashed (signal SIGSEGV)"),
    ("memory", replace(isolate.DEFAULT_LIMITS, memory_mb=512, cpu_seconds=20),
     "ran out of memory (limit 512 MB)"),
    ("hang", replace(isolate.DEFAULT_LIMITS, cpu_seconds=1), "used more than 1 s of CPU"),
])
def test_parser_crash_loop_or_allocation_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, fault: str, limits: Limits, why: str,
):
    monkeypatch.setenv(isolate.FAULT_ENV, fault)
    monkeypatch.setattr(isolate, "DEFAULT_LIMITS", limits)
    with pytest.raises(MemoryStoreError) as info:
        extract_text(b"<html><p>hi</p></html>", "html")
    assert info.value.message == f"the HTML parser {why}; the file was not read"
    with pytest.raises(AudioError) as audio:
        decode(_wav(0.5))
    assert audio.value.message == f"the audio decoder {why}; the file was not read"


def test_wav_header_claiming_a_huge_size_is_bounded():
    wav = bytearray(_wav(1.0))
    struct.pack_into("<I", wav, 4, 0xFFFFFFF0)  # RIFF size
    data_at = wav.index(b"data")
    struct.pack_into("<I", wav, data_at + 4, 0xFFFFFFF0)  # data chunk: ~4 GiB claimed
    t0 = time.monotonic()
    audio = decode(bytes(wav))
    assert abs(audio.duration - 1.0) < 0.01  # what is there, not what the header claims
    assert time.monotonic() - t0 < 20


def _silence_flac(minutes: int) -> bytes:
    av = pytest.importorskip("av")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="flac") as out:
        stream = out.add_stream("flac", rate=8000)
        stream.layout = "mono"
        zeros = np.zeros((1, 8000 * 60), dtype=np.int16)
        for _ in range(minutes):
            frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout="mono")
            frame.sample_rate = 8000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


_VICTIM = """
import resource, sys
from bastion.errors import AudioError
from bastion.voice.audio import decode
from tests.integration.server.test_live_server import serving
data = open(sys.argv[1], "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode(data)
    print("decoded")
except AudioError as exc:
    print("error:", exc.message)
print("grew_mb", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


def test_audio_decompression_bomb_is_bounded(tmp_path: Path):
    bomb = _silence_flac(40)  # ~0.5 MB of FLAC -> 40 minutes, ~230 MB once decoded in memory
    assert len(bomb) < 2_000_000
    path = tmp_path / "bomb.flac"
    path.write_bytes(bomb)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    victim = subprocess.run([sys.executable, "-c", _VICTIM, str(path)], capture_output=True,
                            text=True, timeout=120, env=env)  # a fresh process = bastion
    assert victim.returncode == 0, victim.stderr
    assert "error: the audio is longer than the 120 s limit" in victim.stdout
    grew = int(re.search(r"grew_mb (\d+)", victim.stdout).group(1))  # type: ignore[union-attr]
    assert grew < 50, victim.stdout  # the decoding (and its stop) happened in the child


@pytest.fixture
def crashing_server(bastion_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A live ``bastion serve`` whose parser children all die of SIGSEGV."""
    (bastion_home / "bastion.yaml").write_text(yaml.safe_dump({
        "api": {"token": TOKEN}, "intelligence": {"enabled": False},
        "memory": {"enabled": False}}))
    monkeypatch.setenv(isolate.FAULT_ENV, "segv")  # the server's environment, its children's
    with serving(bastion_home) as base:
        yield base


def test_parser_crash_costs_one_request_and_the_server_keeps_answering(crashing_server: str):
    api = httpx.Client(base_url=crashing_server, timeout=120,
                       headers={"Authorization": f"Bearer {TOKEN}"})
    r = api.post("/v1/audio/transcriptions", files={"file": ("a.wav", _wav(0.5), "audio/wav")},
                 data={"model": "whisper-1"})
    assert r.status_code == 400, r.text
    assert "the audio decoder crashed (signal SIGSEGV)" in r.json()["error"]["message"]
    assert api.get("/health").status_code == 200

    # another one: again one clear error, and the same server process goes on answering
    r = api.post("/v1/audio/transcriptions", files={"file": ("b.wav", b"RIFFjunk", "audio/wav")},
                 data={"model": "whisper-1"})
    assert r.status_code == 400 and "crashed" in r.json()["error"]["message"]
    assert api.get("/health").status_code == 200

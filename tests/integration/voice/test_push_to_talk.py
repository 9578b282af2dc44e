"""``bastion voice`` push-to-talk through real PortAudio devices: an ALSA microphone that reads
a speech file and an ALSA speaker that writes one (no sound card needed)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.voice.audio import from_pcm16
from bastion.voice.models import cache_dir
from tests.unit.voice._shared import espeak

ROOT = Path(__file__).resolve().parents[3]
QUESTION = "What is the capital of France?"

ASOUNDRC = """
pcm.!default {{ type asym; playback.pcm "speaker"; capture.pcm "mic" }}
pcm.speaker {{ type plug; slave {{ pcm "speakerfile"; format S16_LE; rate 22050; channels 1 }} }}
pcm.speakerfile {{ type file; slave.pcm "null"; file "{out}"; format "raw" }}
pcm.mic {{ type plug; slave {{ pcm "micfile"; format S16_LE; rate 16000; channels 1 }} }}
pcm.micfile {{ type file; slave.pcm "null"; file "/dev/null"; infile "{mic}"; format "raw" }}
"""


def _wait_for(proc: subprocess.Popen[bytes], text: str, seen: bytearray) -> None:
    """Read stderr until ``text`` appears (the process printing its prompt)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 600
    while text.encode() not in seen:
        assert proc.poll() is None, seen.decode(errors="replace")
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            seen += os.read(proc.stderr.fileno(), 65536)


@pytest.mark.real_model
def test_push_to_talk_with_alsa_file_devices(tmp_path: Path) -> None:
    pytest.importorskip("sounddevice")
    mic, speaker = tmp_path / "mic.raw", tmp_path / "speaker.raw"
    mic.write_bytes(espeak(QUESTION).resample(16_000).pcm16())
    home = tmp_path / "user"
    home.mkdir()
    (home / ".asoundrc").write_text(ASOUNDRC.format(out=speaker, mic=mic))
    env = {k: v for k, v in os.environ.items() if not (k.startswith("BASTION_") and "__" in k)}
    env.update({"HOME": str(home), "BASTION_HOME": str(tmp_path / "bastion"),
                "BASTION_CACHE": str(cache_dir()), "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": str(ROOT / "src"), "BASTION_MODEL__MAX_TOKENS": "40",
                "BASTION_AGENT__MAX_STEPS": "2",  # a tool loop is not what is tested
                "BASTION_MEMORY__ENABLED": "false",
                # ALSA's file "microphone" is not paced by a clock: it delivers audio as fast as
                # it is read, so the recording hits this cap (the recorder's bound) at once.
                "BASTION_VOICE__MAX_SECONDS": "4"})
    proc = subprocess.Popen([sys.executable, "-m", "bastion", "voice"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdin is not None
    seen = bytearray()
    try:
        _wait_for(proc, "Press Enter to talk", seen)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        _wait_for(proc, "listening", seen)
        time.sleep(1.0)  # let the "microphone" deliver the question
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        _wait_for(proc, "Enter to talk again", seen)
        proc.stdin.close()  # end of input quits
        assert proc.wait(60) == 0, seen.decode(errors="replace")
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = (bytes(seen) + err).decode(errors="replace")
    assert "recording stopped at the 4 s limit" in stderr
    # The unpaced file "microphone" overruns PortAudio's buffer, so only the start of the
    # question survives: what is checked here is the device path (record, transcribe, answer,
    # play, quit on end of input), not recognition quality (tested elsewhere).
    heard = stderr.split("you:", 1)[1].splitlines()[0]
    assert heard.strip(), stderr
    assert "bastion:" in out.decode()
    played = from_pcm16(speaker.read_bytes()[: speaker.stat().st_size // 2 * 2], 22_050)
    assert played.duration > 0.3 and float(abs(played.samples).max()) > 0.1

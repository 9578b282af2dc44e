"""A live ``python -m bastion serve`` with the real model: the official ``openai`` client on
both audio endpoints, and a WebSocket client that speaks a question and gets a spoken answer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import BadRequestError, OpenAI, UnprocessableEntityError
from websockets.sync.client import connect

from bastion.voice.audio import Audio, decode, from_pcm16
from tests.unit.voice._shared import espeak, word_accuracy

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Live:
    base: str
    token: str

    def client(self) -> OpenAI:
        return OpenAI(base_url=f"{self.base}/v1", api_key=self.token, max_retries=0,
                      timeout=300)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("BASTION_") and "__" in k)}
    env.update({
        "BASTION_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT / "src"),
        "BASTION_MODEL__MAX_TOKENS": "40",  # short answers: this is about speech, not prose
        "BASTION_AGENT__MAX_STEPS": "2",  # a tool loop is not what is tested
        "BASTION_MEMORY__ENABLED": "false",  # the memory feature has its own tests
    })
    return env


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("voice-live")
    init = subprocess.run([sys.executable, "-m", "bastion", "init", "--yes"], env=_env(home),
                          capture_output=True, text=True, timeout=120, cwd=home)
    assert init.returncode == 0, init.stderr
    token = yaml.safe_load((home / "bastion.yaml").read_text())["api"]["token"]
    out = home / "serve.out"
    with out.open("w") as o:
        proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", "0"],
                                env=_env(home), stdout=o, stderr=subprocess.STDOUT, cwd=home)
    try:
        deadline = time.monotonic() + 120
        while not (m := re.search(r"(http://127\.0\.0\.1:\d+)", out.read_text())):
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "bastion serve did not start"
            time.sleep(0.1)
        yield Live(m.group(1), token)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


QUESTION = "What is the capital of France?"


def test_openai_client_transcribes(live: Live) -> None:
    client = live.client()
    wav = espeak("What is the weather like in Berlin tomorrow?").wav()
    t = client.audio.transcriptions.create(model="whisper-1", file=("q.wav", wav, "audio/wav"))
    assert word_accuracy("What is the weather like in Berlin tomorrow?", t.text) >= 0.85
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("q.wav", wav), response_format="verbose_json", language="en")
    assert verbose.language == "en" and verbose.duration > 1.0
    with pytest.raises(BadRequestError, match="not audio"):
        client.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"nope" * 100))


def test_openai_client_speaks(live: Live) -> None:
    client = live.client()
    text = "Good evening. The front door is locked."
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input=text,
                                     response_format="wav").read()
    audio = decode(wav)
    assert audio.sample_rate == 22_050 and 1.0 < audio.duration < 8.0
    mp3 = client.audio.speech.create(model="tts-1", voice="espeak", input=text).read()
    assert decode(mp3).duration > 1.0
    # the voice is an enum in the API contract: an unknown one is a 422 naming the choices
    with pytest.raises(UnprocessableEntityError, match="voice: Input should be 'piper'"):
        client.audio.speech.create(model="tts-1", voice="nobody", input="hi")


@pytest.mark.real_model
def test_websocket_spoken_question_gets_a_spoken_answer(live: Live) -> None:
    url = live.base.replace("http://", "ws://") + f"/v1/voice/ws?token={live.token}"
    pcm = espeak(QUESTION).resample(16_000).pcm16()
    messages: list[dict[str, Any]] = []
    audio: list[Audio] = []
    with connect(url, open_timeout=30, close_timeout=5, max_size=2**24) as ws:
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        ws.send(json.dumps({"type": "start", "sample_rate": 16_000, "partials": False}))
        json.loads(ws.recv(timeout=60))
        for i in range(0, len(pcm), 3200):  # 100 ms frames, as a microphone would send
            ws.send(pcm[i : i + 3200])
        ws.send(json.dumps({"type": "end"}))
        while True:
            msg = json.loads(ws.recv(timeout=300))
            messages.append(msg)
            if msg["type"] == "audio":
                audio.append(from_pcm16(ws.recv(timeout=60), msg["sample_rate"]))
            if msg["type"] in ("turn_end", "error"):
                break
    transcript = next(m for m in messages if m["type"] == "transcript")
    assert word_accuracy(QUESTION, transcript["text"]) >= 0.8, transcript
    end = messages[-1]
    assert end["type"] == "turn_end" and end["error"] is None, messages[-3:]
    answer = "".join(m["text"] for m in messages if m["type"] == "text")
    assert answer.strip() and end["answer"].strip()
    assert audio and all(a.sample_rate == 22_050 for a in audio)
    seconds = sum(a.duration for a in audio)
    # 40 tokens of answer: at least a word, at most ~30 s of speech.
    assert 0.3 < seconds < 40.0
    assert end["audio_seconds"] == pytest.approx(seconds, abs=0.01)
    assert max(float(abs(a.samples).max()) for a in audio) > 0.1

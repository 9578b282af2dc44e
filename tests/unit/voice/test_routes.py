"""The speech API (HTTP and WebSocket) in-process, scripted model, real STT and TTS."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from bastion.app import App, build_app
from bastion.config.model import ApiConfig, Config, MemoryConfig, VoiceConfig
from bastion.server.app import create_app
from bastion.server.routes.voice import _subtitles
from bastion.testing import Reply, ScriptedModel, say
from bastion.voice.audio import Audio, decode, from_pcm16, silence
from bastion.voice.service import VoiceService
from bastion.voice.stt import Segment, Transcript
from tests.unit.voice._shared import espeak, word_accuracy

TOKEN = "tok-voice-api-5e6f7a8b"
QUESTION = "What is the weather like in Berlin tomorrow?"


@dataclass
class Api:
    client: TestClient
    model: ScriptedModel
    app: App


@pytest.fixture
def make_api(voice: VoiceService) -> Iterator[Callable[..., Api]]:
    made: list[tuple[TestClient, App]] = []

    def make(*replies: Reply, voice_config: VoiceConfig | None = None) -> Api:
        config = Config(api=ApiConfig(token=TOKEN), memory=MemoryConfig(enabled=False),
                        voice=voice_config or VoiceConfig())
        model = ScriptedModel(*replies)
        app = build_app(config, model=model)
        api = create_app(app)
        # Share the session's loaded models, with this test's limits.
        api.state.voice = VoiceService(config.voice, stt=voice.stt,
                                       tts={"piper": voice.tts("piper"),
                                            "espeak": voice.tts("espeak")})
        client = TestClient(api, headers={"Authorization": f"Bearer {TOKEN}"})
        client.__enter__()
        made.append((client, app))
        return Api(client, model, app)

    yield make
    for client, app in made:
        client.__exit__(None, None, None)
        app.audit.close()


@pytest.fixture(scope="module")
def question_wav() -> bytes:
    return espeak(QUESTION).wav()


def _upload(api: Api, data: bytes, **form: str) -> Any:
    return api.client.post("/v1/audio/transcriptions",
                           files={"file": ("q.wav", data, "audio/wav")},
                           data={"model": "whisper-1", **form})


def test_transcription_json_and_verbose_json(make_api: Callable[..., Api],
                                             question_wav: bytes) -> None:
    api = make_api()
    r = _upload(api, question_wav, language="en")
    assert r.status_code == 200, r.text
    assert word_accuracy(QUESTION, r.json()["text"]) >= 0.85
    verbose = _upload(api, question_wav, response_format="verbose_json").json()
    assert verbose["language"] == "en" and verbose["segments"]
    assert verbose["duration"] == pytest.approx(decode(question_wav).duration, abs=0.01)
    assert verbose["segments"][0]["text"] in verbose["text"]


def test_subtitle_formats() -> None:
    t = Transcript("Hello there. General Kenobi.", "en", 4.0,
                   (Segment(0.0, 1.5, "Hello there."), Segment(1.5, 3.25, "General Kenobi.")))
    assert _subtitles(t, "srt") == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n00:00:01,500 --> 00:00:03,250\nGeneral Kenobi.\n"
    )
    assert _subtitles(t, "vtt").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n")


def test_silence_transcribes_to_nothing(make_api: Callable[..., Api]) -> None:
    r = _upload(make_api(), silence(3.0).wav())
    assert r.status_code == 200 and r.json() == {"text": ""}


@pytest.mark.parametrize(
    ("data", "needle"),
    [(b"", "empty"), (b"%PDF-1.7 not audio at all" * 20, "not audio"),
     (b"RIFF\x10\x00\x00\x00WAVEfmt ", "WAV")],
)
def test_bad_audio_is_a_400_with_a_fix(make_api: Callable[..., Api], data: bytes,
                                       needle: str) -> None:
    r = _upload(make_api(), data)
    assert r.status_code == 400
    err = r.json()["error"]
    assert needle in err["message"] and err["fix"] and err["code"] == "AudioError"


def test_huge_and_long_audio_are_refused(make_api: Callable[..., Api]) -> None:
    api = make_api(voice_config=VoiceConfig(max_upload_mb=0.05, max_seconds=1.0))
    big = _upload(api, b"RIFF" + b"\0" * 60_000)
    assert big.status_code == 400 and "limit" in big.json()["error"]["message"]
    long = _upload(api, silence(1.5, 8000).wav())
    assert long.status_code == 400 and "max_seconds" in long.json()["error"]["fix"]


def test_speech_formats(make_api: Callable[..., Api]) -> None:
    api = make_api()
    body = {"model": "tts-1", "voice": "alloy", "input": "Hello there. How are you today?"}
    wav = api.client.post("/v1/audio/speech", json={**body, "response_format": "wav"})
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    audio = decode(wav.content)
    assert audio.sample_rate == 22_050 and 1.0 < audio.duration < 8.0
    mp3 = api.client.post("/v1/audio/speech", json=body)  # OpenAI's default format: mp3
    assert mp3.headers["content-type"] == "audio/mpeg"
    assert decode(mp3.content).duration == pytest.approx(audio.duration, abs=0.2)
    pcm = api.client.post("/v1/audio/speech", json={**body, "response_format": "pcm"})
    # Each request synthesises anew and Piper's durations vary a few percent between runs
    # (its noise terms), so compare loosely; the exact 24 kHz encoding is unit-tested in audio.
    assert len(pcm.content) / 2 / 24_000 == pytest.approx(audio.duration, rel=0.12)
    espeak_wav = api.client.post("/v1/audio/speech",
                                 json={**body, "voice": "espeak", "response_format": "wav",
                                       "speed": 1.5})
    assert decode(espeak_wav.content).duration < audio.duration * 1.5


def test_speech_errors(make_api: Callable[..., Api]) -> None:
    api = make_api()
    r = api.client.post("/v1/audio/speech", json={"input": "hi", "voice": "galadriel"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "voice"  # the schema's enum
    assert "'piper'" in r.json()["error"]["message"]
    r = api.client.post("/v1/audio/speech", json={"input": "", "voice": "alloy"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "input"
    r = api.client.post("/v1/audio/speech", json={"input": "hi", "response_format": "wma"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "response_format"


def test_audio_routes_need_the_token(make_api: Callable[..., Api],
                                     question_wav: bytes) -> None:
    api = make_api()
    r = api.client.post("/v1/audio/transcriptions", headers={"Authorization": "Bearer wrong"},
                        files={"file": ("q.wav", question_wav, "audio/wav")})
    assert r.status_code == 401
    r = api.client.post("/v1/audio/speech", headers={"Authorization": ""}, json={"input": "x"})
    assert r.status_code == 401
    with pytest.raises(WebSocketDisconnect) as closed, \
            api.client.websocket_connect("/v1/voice/ws", headers={"Authorization": ""}) as ws:
        ws.receive_json()
    assert closed.value.code == 1008


# ---------------------------------------------------------------- WebSocket


def _stream(ws: WebSocketTestSession, audio: Audio, rate: int = 16_000, ms: int = 100) -> None:
    pcm = audio.resample(rate).pcm16()
    step = rate * 2 * ms // 1000
    for i in range(0, len(pcm), step):
        ws.send_bytes(pcm[i : i + step])


def _collect_turn(ws: WebSocketTestSession) -> tuple[list[dict[str, Any]], list[Audio]]:
    messages: list[dict[str, Any]] = []
    audio: list[Audio] = []
    while True:
        msg = ws.receive_json()
        messages.append(msg)
        if msg["type"] == "audio":
            audio.append(from_pcm16(ws.receive_bytes(), msg["sample_rate"]))
        if msg["type"] in ("turn_end", "error"):
            return messages, audio


def test_websocket_voice_turn(make_api: Callable[..., Api]) -> None:
    api = make_api(say("It will be sunny in Berlin. Expect twenty degrees in the afternoon."))
    with api.client.websocket_connect(f"/v1/voice/ws?token={TOKEN}") as ws:
        assert ws.receive_json()["type"] == "ready"
        ws.send_text(json.dumps({"type": "start", "sample_rate": 16_000, "vad": False,
                                 "partials": False, "session_id": "voice-test-1",
                                 "engine": "piper"}))
        ready = ws.receive_json()
        assert ready == {"type": "ready", "session_id": "voice-test-1", "sample_rate": 16_000}
        _stream(ws, espeak(QUESTION))
        ws.send_text(json.dumps({"type": "end"}))
        messages, audio = _collect_turn(ws)
    kinds = [m["type"] for m in messages]
    transcript = next(m for m in messages if m["type"] == "transcript")
    assert word_accuracy(QUESTION, transcript["text"]) >= 0.85
    assert api.model.seen[0].messages[-1].content == transcript["text"]
    assert kinds.index("transcript") < kinds.index("text") < kinds.index("audio")
    text = "".join(m["text"] for m in messages if m["type"] == "text")
    assert text == "It will be sunny in Berlin. Expect twenty degrees in the afternoon."
    assert len(audio) == 2 and all(a.sample_rate == 22_050 for a in audio)
    total = sum(a.duration for a in audio)
    assert 2.0 < total < 15.0
    assert all(float(np.abs(a.samples).max()) > 0.1 for a in audio)
    end = messages[-1]
    assert end["type"] == "turn_end" and end["sentences"] == 2
    assert end["audio_seconds"] == pytest.approx(total, abs=0.01)


def test_websocket_endpointing_partials_and_silence(make_api: Callable[..., Api]) -> None:
    api = make_api(say("Sure thing, done."))
    with api.client.websocket_connect("/v1/voice/ws", params={"token": TOKEN}) as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "start", "engine": "espeak", "partials": True}))
        ws.receive_json()
        # Speech then a second of silence, and no "end": the server's VAD ends the utterance.
        _stream(ws, Audio.concat([espeak("Set a timer for ten minutes."), silence(1.2)], 16_000))
        messages, audio = _collect_turn(ws)
        kinds = [m["type"] for m in messages]
        assert "partial" in kinds and kinds.index("partial") < kinds.index("transcript")
        assert any(m["type"] == "transcript" and "timer" in m["text"].lower() for m in messages)
        assert audio and messages[-1]["answer"] == "Sure thing, done."
        # Silence only, then end: an empty transcript and no turn for the model.
        _stream(ws, silence(1.0))
        ws.send_text(json.dumps({"type": "end"}))
        messages, audio = _collect_turn(ws)
        transcript = next(m for m in messages if m["type"] == "transcript")
        assert transcript["text"] == "" and transcript["speech"] is False
        assert messages[-1] == {"type": "turn_end", "heard": "", "answer": "",
                                "audio_seconds": 0.0, "sentences": 0}
        assert not audio and len(api.model.seen) == 1


def test_websocket_bad_input_is_reported_and_the_socket_lives_on(
    make_api: Callable[..., Api]
) -> None:
    api = make_api()
    with api.client.websocket_connect("/v1/voice/ws", params={"token": TOKEN}) as ws:
        ws.receive_json()
        ws.send_bytes(b"\x01\x02\x03")  # half a sample
        err = ws.receive_json()
        assert err["type"] == "error" and "multiple of 2" in err["message"] and err["fix"]
        ws.send_text(json.dumps({"type": "start", "sample_rate": 3}))
        err = ws.receive_json()
        assert err["type"] == "error" and "sample_rate" in err["message"]
        ws.send_text("{not json")
        assert ws.receive_json()["type"] == "error"
        ws.send_text(json.dumps({"type": "end"}))  # nothing recorded
        err = ws.receive_json()
        assert err["type"] == "error" and "no audio" in err["message"]
        ws.send_text(json.dumps({"type": "dance"}))
        assert "unknown message type" in ws.receive_json()["message"]

from __future__ import annotations

import numpy as np
import pytest

from bastion.voice.audio import Audio, silence
from bastion.voice.vad import Endpointer, SpeechGate
from tests.unit.voice._shared import espeak


@pytest.fixture(scope="module")
def speech() -> Audio:
    return espeak("Please turn off the lights in the kitchen.").resample(16_000)


def noise(db: float, seconds: float = 2.0) -> Audio:
    rng = np.random.default_rng(7)
    amp = 10 ** (db / 20)
    return Audio((rng.standard_normal(int(seconds * 16_000)) * amp).astype(np.float32), 16_000)


@pytest.mark.parametrize("kind", ["silero", "webrtc", "energy"])
def test_every_gate_hears_speech_and_not_silence(kind: str, speech: Audio) -> None:
    gate = SpeechGate(kind)  # type: ignore[arg-type]
    assert gate.has_speech(speech)
    assert not gate.has_speech(silence(2.0))
    assert not gate.has_speech(noise(-60))


def test_silero_rejects_loud_noise_and_hum(speech: Audio) -> None:
    gate = SpeechGate("silero")
    assert not gate.has_speech(noise(-30))
    t = np.arange(32_000) / 16_000
    hum = Audio((0.05 * np.sin(2 * np.pi * 60 * t)).astype(np.float32), 16_000)
    assert not gate.has_speech(hum)
    noisy = Audio(speech.samples + noise(-35, speech.duration).samples[: len(speech.samples)],
                  16_000)
    assert gate.has_speech(noisy)


def test_gate_off_passes_everything() -> None:
    assert SpeechGate("off").has_speech(silence(0.5))


def test_endpointer_ends_after_trailing_silence(speech: Audio) -> None:
    ep = Endpointer(SpeechGate("silero"), silence_ms=600)
    for chunk in _chunks(silence(0.5)):
        ep.feed(chunk)
    assert not ep.started
    for chunk in _chunks(speech):
        ep.feed(chunk)
    assert ep.started and not ep.ended
    for chunk in _chunks(silence(1.0)):
        ep.feed(chunk)
    assert ep.ended


def test_endpointer_does_not_end_on_silence_alone() -> None:
    ep = Endpointer(SpeechGate("silero"), silence_ms=300)
    for chunk in _chunks(silence(2.0)):
        ep.feed(chunk)
    assert not ep.started and not ep.ended


def _chunks(audio: Audio, ms: int = 100) -> list[Audio]:
    step = audio.sample_rate * ms // 1000
    return [Audio(audio.samples[i : i + step], audio.sample_rate)
            for i in range(0, len(audio.samples), step)]


@pytest.mark.parametrize("kind", ["silero", "webrtc"])
def test_speech_late_in_a_long_clip_is_found(kind: str, speech: Audio) -> None:
    gate = SpeechGate(kind)  # type: ignore[arg-type]
    late = Audio.concat([silence(17.0), speech], 16_000)
    assert gate.has_speech(late)
    assert not gate.has_speech(silence(20.0))

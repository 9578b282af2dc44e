"""STT and TTS engines against the real models (loaded once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bastion.config.model import SttConfig, TtsConfig
from bastion.errors import AudioError, ConfigError
from bastion.voice.audio import Audio, silence
from bastion.voice.service import VoiceService
from bastion.voice.stt import WhisperSTT
from bastion.voice.tts import EspeakTTS, PiperTTS
from tests.unit.voice._shared import espeak, word_accuracy


async def test_transcribes_espeak_speech(voice: VoiceService) -> None:
    said = "What is the weather like in Berlin tomorrow?"
    t = await voice.transcribe(espeak(said), language="en")
    assert word_accuracy(said, t.text) >= 0.85, t.text
    assert t.speech and t.language == "en"
    assert t.segments and t.segments[-1].end <= t.duration + 0.5


async def test_silence_and_noise_give_no_text(voice: VoiceService) -> None:
    rng = np.random.default_rng(3)
    hiss = Audio((rng.standard_normal(48_000) * 0.03).astype(np.float32), 16_000)
    for audio in (silence(3.0), hiss):
        t = await voice.transcribe(audio)
        assert t.text == "" and not t.speech


async def test_language_is_detected(voice: VoiceService) -> None:
    audio = espeak("Guten Morgen, wie geht es dir heute? Das Wetter ist sehr schön.", voice="de")
    t = await voice.transcribe(audio)
    assert t.language == "de", t


async def test_unknown_language_is_a_clear_error(voice: VoiceService) -> None:
    with pytest.raises(AudioError, match="unknown language 'klingon'") as err:
        await voice.transcribe(espeak("Hello there, how are you?"), language="klingon")
    assert "ISO 639-1" in (err.value.fix or "")


def test_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a CTranslate2 Whisper model folder"):
        WhisperSTT(SttConfig(model=str(tmp_path)))


def test_piper_speaks_one_piece_per_sentence_and_speed_works(voice: VoiceService) -> None:
    tts = voice.tts("piper")
    assert isinstance(tts, PiperTTS) and tts.sample_rate == 22_050
    text = "Hello there. This is the second sentence."
    normal = list(tts.synthesize(text))
    fast = list(tts.synthesize(text, speed=2.0))
    assert len(normal) == 2
    d_normal = sum(a.duration for a in normal)
    d_fast = sum(a.duration for a in fast)
    assert 1.0 < d_normal < 8.0
    assert d_fast < d_normal * 0.75
    assert all(np.abs(a.samples).max() > 0.1 for a in normal)


def test_espeak_engine_voice_and_speed(voice: VoiceService) -> None:
    tts = voice.tts("espeak")
    assert isinstance(tts, EspeakTTS)
    normal = sum(a.duration for a in tts.synthesize("One two three four five six."))
    fast = sum(a.duration for a in tts.synthesize("One two three four five six.", speed=2.0))
    assert fast < normal * 0.75


def test_engine_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no voice 'no-such-voice'") as err:
        EspeakTTS(TtsConfig(engine="espeak", voice="no-such-voice"))
    assert "espeak-ng --voices" in (err.value.fix or "")
    assert EspeakTTS(TtsConfig(engine="espeak", voice="de+f3")).voice == "de+f3"
    with pytest.raises(ConfigError, match="Piper voice"):
        PiperTTS(TtsConfig(voice=str(tmp_path / "missing.onnx")))


def test_markup_only_text_says_nothing(voice: VoiceService) -> None:
    assert list(voice.tts("piper").synthesize("``` ```")) == []

from __future__ import annotations

import pytest

from bastion.config.loader import load, set_key
from bastion.errors import ConfigError
from bastion.voice.service import VoiceService


def test_voice_defaults() -> None:
    cfg = load().voice
    assert cfg.stt.model == "base" and cfg.stt.compute_type == "int8"
    assert cfg.stt.language is None and cfg.stt.vad == "silero"
    assert cfg.tts.engine == "piper" and cfg.tts.speed == 1.0


def test_env_and_file_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_VOICE__TTS__ENGINE", "espeak")
    monkeypatch.setenv("BASTION_VOICE__STT__LANGUAGE", "de")
    cfg = load().voice
    assert cfg.tts.engine == "espeak" and cfg.stt.language == "de"
    set_key(None, "voice.tts.speed", "1.5")
    assert load().voice.tts.speed == 1.5


def test_bad_values_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="voice.tts.engine"):
        set_key(None, "voice.tts.engine", "festival")
    with pytest.raises(ConfigError, match="voice.stt.vad"):
        set_key(None, "voice.stt.vad", "magic")


def test_unknown_engine_at_runtime() -> None:
    with pytest.raises(ConfigError, match="unknown TTS engine") as err:
        VoiceService().tts("festival")
    assert "piper" in (err.value.fix or "")

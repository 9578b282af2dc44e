from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from bastion.errors import AudioError
from bastion.voice.audio import (
    FORMATS,
    PCM_RATE,
    Audio,
    decode,
    encode,
    from_pcm16,
    media_type,
    wav_bytes,
)


def tone(seconds: float = 1.0, rate: int = 16_000, freq: float = 440.0) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def raw_wav(frames: bytes, *, width: int, channels: int, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def test_wav_round_trip_keeps_samples() -> None:
    a = tone()
    back = decode(a.wav())
    assert back.sample_rate == 16_000
    assert len(back.samples) == len(a.samples)
    assert np.max(np.abs(back.samples - a.samples)) < 1e-3


def _frames(ints: np.ndarray, width: int) -> bytes:
    if width == 1:
        return (ints + 128).astype(np.uint8).tobytes()
    return b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_wav_sample_widths_and_stereo_downmix(width: int) -> None:
    a = tone(0.25, 8000)
    ints = np.round(a.samples * (2 ** (8 * width - 1) - 1)).astype(np.int64)
    mono = decode(raw_wav(_frames(ints, width), width=width, channels=1, rate=8000))
    assert mono.sample_rate == 8000
    assert np.max(np.abs(mono.samples - a.samples)) < 0.02
    # Stereo whose channels cancel: the mono mix must be near silence.
    inter = np.stack([ints, -ints], axis=1).reshape(-1)
    mixed = decode(raw_wav(_frames(inter, width), width=width, channels=2, rate=8000))
    assert len(mixed.samples) == len(a.samples)
    assert np.max(np.abs(mixed.samples)) < 0.02


def test_empty_audio_is_a_clear_error() -> None:
    with pytest.raises(AudioError, match="empty") as err:
        decode(b"")
    assert "WAV" in (err.value.fix or "")
    with pytest.raises(AudioError, match="no samples"):
        decode(wav_bytes(b"", 16_000))


def test_not_audio_is_a_clear_error() -> None:
    with pytest.raises(AudioError, match="not audio") as err:
        decode(b"this is a text file, not a recording" * 10)
    assert err.value.fix and "WAV" in err.value.fix


def test_truncated_wav_header_is_a_clear_error() -> None:
    with pytest.raises(AudioError, match="WAV"):
        decode(b"RIFF\x24\x00\x00\x00WAVEfmt ")


def test_huge_upload_is_refused_before_decoding() -> None:
    with pytest.raises(AudioError, match="over the 1 MB limit") as err:
        decode(b"RIFF" + b"\0" * (2 * 2**20), max_bytes=2**20)
    assert "max_upload_mb" in (err.value.fix or "")


def test_too_long_audio_is_refused() -> None:
    with pytest.raises(AudioError, match="over the 2 s limit") as err:
        decode(tone(3.0).wav(), max_seconds=2.0)
    assert "max_seconds" in (err.value.fix or "")


def test_pcm_frames_must_be_whole_samples() -> None:
    assert from_pcm16(b"\x00\x10" * 8, 16_000).duration == pytest.approx(8 / 16_000)
    with pytest.raises(AudioError, match="multiple of 2"):
        from_pcm16(b"\x00\x10\x00", 16_000)
    with pytest.raises(AudioError, match="sample rate"):
        from_pcm16(b"\x00\x00", 100)


def test_resample_changes_length_not_pitch() -> None:
    a = tone(1.0, 22_050, 300.0)
    b = a.resample(16_000)
    assert len(b.samples) == 16_000
    spectrum = np.abs(np.fft.rfft(b.samples))
    assert abs(int(np.argmax(spectrum)) - 300) <= 2  # 1 Hz bins over one second


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "pcm"])
def test_every_speech_format_decodes_back(fmt: str) -> None:
    a = tone(1.0, 22_050)
    data = encode(a, fmt)
    assert media_type(fmt).startswith("audio/")
    back = decode(data)
    assert back.duration == pytest.approx(1.0, abs=0.1)
    assert np.sqrt(np.mean(back.samples**2)) > 0.1  # still the tone, not silence


def test_pcm_format_is_24khz_s16le() -> None:
    data = encode(tone(1.0, 22_050), "pcm")
    assert len(data) == PCM_RATE * 2


def test_unknown_format_names_the_choices() -> None:
    with pytest.raises(AudioError, match="unknown audio format") as err:
        encode(tone(0.1), "wma")
    assert "mp3" in (err.value.fix or "")

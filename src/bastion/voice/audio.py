"""Audio in memory: decode and validate uploads, PCM frames, WAV encoding, resampling.

Every path that takes audio from outside (a file, an upload, a WebSocket stream, a Wyoming
client) goes through :func:`decode` or :func:`from_pcm16`, so a wrong format, an empty file or
one that is too long gets the same clear :class:`~bastion.errors.AudioError` everywhere.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bastion.errors import AudioError

STT_RATE = 16_000
"""Whisper and the VADs work at 16 kHz mono."""

_FORMAT_FIX = "send 16-bit PCM WAV (mono, 16 kHz is best); FLAC, MP3, OGG and WebM also work"


@dataclass(frozen=True, slots=True)
class Audio:
    """Mono audio: float32 samples in [-1, 1] at ``sample_rate`` Hz."""

    samples: npt.NDArray[np.float32]
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0

    def resample(self, rate: int) -> Audio:
        """Return this audio at ``rate`` Hz (linear interpolation; enough for speech)."""
        if rate == self.sample_rate or not len(self.samples):
            return Audio(self.samples, rate)
        n_out = max(1, round(len(self.samples) * rate / self.sample_rate))
        x_old = np.arange(len(self.samples), dtype=np.float64) / self.sample_rate
        x_new = np.arange(n_out, dtype=np.float64) / rate
        out = np.interp(x_new, x_old, self.samples).astype(np.float32)
        return Audio(out, rate)

    def pcm16(self) -> bytes:
        """Return the samples as signed 16-bit little-endian PCM."""
        clipped = np.clip(self.samples, -1.0, 1.0)
        return (clipped * 32767.0).astype("<i2").tobytes()

    def wav(self) -> bytes:
        """Return a complete 16-bit mono WAV file."""
        return wav_bytes(self.pcm16(), self.sample_rate)

    @staticmethod
    def concat(parts: list[Audio], sample_rate: int) -> Audio:
        """Join pieces (resampled to ``sample_rate`` where needed)."""
        arrays = [p.resample(sample_rate).samples for p in parts if len(p.samples)]
        if not arrays:
            return Audio(np.zeros(0, dtype=np.float32), sample_rate)
        return Audio(np.concatenate(arrays), sample_rate)


def silence(seconds: float, sample_rate: int = STT_RATE) -> Audio:
    """Return ``seconds`` of digital silence."""
    return Audio(np.zeros(int(seconds * sample_rate), dtype=np.float32), sample_rate)


def wav_bytes(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """Wrap 16-bit PCM in a WAV container."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def from_pcm16(data: bytes, sample_rate: int, channels: int = 1) -> Audio:
    """Turn raw signed 16-bit little-endian PCM into :class:`Audio` (mixing down to mono)."""
    if sample_rate < 4000 or sample_rate > 192_000:
        raise AudioError(f"unsupported sample rate {sample_rate} Hz", fix="use 16000 Hz")
    if channels < 1 or channels > 8:
        raise AudioError(f"unsupported channel count {channels}", fix="send mono audio")
    frame = 2 * channels
    if len(data) % frame:
        raise AudioError(
            f"PCM data length {len(data)} is not a multiple of {frame} bytes",
            fix="send whole 16-bit little-endian samples",
        )
    ints = np.frombuffer(data, dtype="<i2")
    samples = ints.astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), sample_rate)


def _from_wave(data: bytes) -> Audio:
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"unreadable WAV file: {exc}", fix=_FORMAT_FIX) from exc
    if rate <= 0 or channels <= 0:
        raise AudioError("the WAV header is invalid", fix=_FORMAT_FIX)
    if width == 2:
        return from_pcm16(frames[: len(frames) - len(frames) % (2 * channels)], rate, channels)
    if width == 1:  # unsigned 8-bit
        s = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        raw = np.frombuffer(frames[: len(frames) - len(frames) % 3], dtype=np.uint8).reshape(-1, 3)
        ints = (raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8)) | (
            raw[:, 2].astype(np.int8).astype(np.int32) << 16
        )
        s = ints.astype(np.float32) / 8_388_608.0
    elif width == 4:
        s = np.frombuffer(frames, dtype="<i4").astype(np.float32) / 2_147_483_648.0
    else:
        raise AudioError(f"unsupported WAV sample width {width * 8} bits", fix=_FORMAT_FIX)
    s = s[: len(s) - len(s) % channels]
    if channels > 1:
        s = s.reshape(-1, channels).mean(axis=1)
    return Audio(np.ascontiguousarray(s, dtype=np.float32), rate)


def _from_container(data: bytes, max_seconds: float = 120.0) -> Audio:
    try:
        import av  # shipped with faster-whisper
    except ImportError as exc:
        raise AudioError("only WAV audio can be read without the voice extra",
                         fix="pip install 'bastion[voice]' or send WAV") from exc
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioError("the file has no audio stream", fix=_FORMAT_FIX)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=STT_RATE)
            chunks: list[bytes] = []
            limit = int(max_seconds * STT_RATE * 2)  # a bomb stops here, not at the end
            size = 0
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(bytes(out.planes[0])[: out.samples * 2])
                    size += len(chunks[-1])
                if size > limit:
                    raise AudioError(f"the audio is longer than the {max_seconds:.0f} s limit",
                                     fix="send a shorter clip or raise voice.max_seconds")
            for out in resampler.resample(None):
                chunks.append(bytes(out.planes[0])[: out.samples * 2])
    except AudioError:
        raise
    except Exception as exc:  # PyAV raises many kinds for garbage input
        raise AudioError("the data is not audio in a format bastion can read",
                         fix=_FORMAT_FIX) from exc
    return from_pcm16(b"".join(chunks), STT_RATE)


def decode(data: bytes, *, max_seconds: float = 120.0, max_bytes: int = 25 * 2**20) -> Audio:
    """Decode an audio file (WAV natively; FLAC/MP3/OGG/WebM through PyAV) and validate it.

    The decoding runs in a child process with memory, CPU and time limits
    (:func:`bastion.security.isolate.run_isolated`): a decoder crash or a decompression
    bomb fails this one request with a clear error.

    Raises:
        AudioError: empty, too large, too long, silent-length, or not a readable audio format.

    """
    if not data:
        raise AudioError("the audio is empty", fix=_FORMAT_FIX)
    if len(data) > max_bytes:
        raise AudioError(
            f"the audio is {len(data) / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit",
            fix="send a shorter clip or raise voice.max_upload_mb",
        )
    from bastion.security.isolate import run_isolated

    meta, raw = run_isolated("bastion.voice.audio:decode_in_child", data,
                             max_seconds=max_seconds, what="audio decoder", error=AudioError)
    rate = meta.get("sample_rate")
    if not isinstance(rate, int) or rate <= 0 or len(raw) % 4:
        raise AudioError("the audio decoder returned nothing usable", fix=_FORMAT_FIX)
    return validate(Audio(np.frombuffer(raw, dtype="<f4").astype(np.float32), rate),
                    max_seconds=max_seconds)


def decode_in_child(data: bytes, max_seconds: float) -> tuple[dict[str, Any], bytes]:
    """Decode audio (runs in the limited child process of :func:`decode`)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        audio = _from_wave(data)
    else:
        audio = _from_container(data, max_seconds)
    audio = validate(audio, max_seconds=max_seconds)
    return {"sample_rate": audio.sample_rate}, audio.samples.astype("<f4").tobytes()


def validate(audio: Audio, *, max_seconds: float = 120.0) -> Audio:
    """Check that ``audio`` is non-empty, finite and not longer than ``max_seconds``."""
    if not len(audio.samples):
        raise AudioError("the audio has no samples", fix=_FORMAT_FIX)
    if audio.duration > max_seconds:
        raise AudioError(
            f"the audio is {audio.duration:.0f} s long, over the {max_seconds:.0f} s limit",
            fix="send a shorter clip or raise voice.max_seconds",
        )
    if not np.isfinite(audio.samples).all():
        raise AudioError("the audio contains invalid samples (NaN/inf)", fix=_FORMAT_FIX)
    return audio


# OpenAI's /v1/audio/speech formats: container, codec, sample rate (None = keep), media type.
_ENCODINGS: dict[str, tuple[str, str, int | None, str]] = {
    "mp3": ("mp3", "libmp3lame", None, "audio/mpeg"),
    "opus": ("ogg", "libopus", 24_000, "audio/ogg"),
    "aac": ("adts", "aac", None, "audio/aac"),
    "flac": ("flac", "flac", None, "audio/flac"),
}
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
PCM_RATE = 24_000
"""OpenAI's ``pcm`` speech format: raw signed 16-bit little-endian mono at 24 kHz."""


def media_type(fmt: str) -> str:
    """Return the HTTP media type for a speech format."""
    if fmt == "wav":
        return "audio/wav"
    if fmt == "pcm":
        return "audio/pcm"
    return _ENCODINGS[fmt][3]


def encode(audio: Audio, fmt: str) -> bytes:
    """Encode ``audio`` as ``fmt`` (one of :data:`FORMATS`).

    Raises:
        AudioError: an unknown format, or a codec this PyAV build lacks.

    """
    if fmt == "wav":
        return audio.wav()
    if fmt == "pcm":
        return audio.resample(PCM_RATE).pcm16()
    if fmt not in _ENCODINGS:
        raise AudioError(f"unknown audio format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    container, codec, rate, _ = _ENCODINGS[fmt]
    try:
        import av
    except ImportError as err:
        raise AudioError(f"{fmt} output needs PyAV", fix="pip install 'bastion[voice]' or "
                         "ask for wav or pcm") from err
    if rate:
        audio = audio.resample(rate)
    ints = (np.clip(audio.samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    buf = io.BytesIO()
    try:
        with av.open(buf, mode="w", format=container) as out:
            stream: Any = out.add_stream(codec, rate=audio.sample_rate, layout="mono")
            frame = av.AudioFrame.from_ndarray(ints[None, :], format="s16", layout="mono")
            frame.sample_rate = audio.sample_rate
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    except (av.error.FFmpegError, ValueError) as exc:
        raise AudioError(f"cannot encode {fmt}: {exc}", fix="ask for wav or pcm") from exc
    return buf.getvalue()

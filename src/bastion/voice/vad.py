"""Voice activity detection: keep silence and noise away from Whisper, find where speech ends.

Whisper hallucinates text on silence (faster-whisper #506, #465), so every transcription first
asks a :class:`SpeechGate` whether the audio holds speech at all. Detectors, measured by
bench/voice.py on speech, silence, -50/-30 dBFS white noise, 60 Hz hum and noisy speech:

- ``silero`` (default): the Silero VAD network shipped inside faster-whisper; right on every
  case, ~3 ms per second of audio.
- ``webrtc``: the WebRTC VAD; rejects silence and quiet noise but calls loud noise speech.
- ``energy``: a loudness threshold with no dependency; the same weakness as ``webrtc``.
- ``off``: every clip goes to Whisper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from bastion._extras import require
from bastion.voice.audio import STT_RATE, Audio

FRAME_MS = 30
_FRAME = STT_RATE * FRAME_MS // 1000  # 480 samples
VadKind = Literal["silero", "webrtc", "energy", "off"]


def _frames(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    n = len(samples) // _FRAME
    return samples[: n * _FRAME].reshape(n, _FRAME)


def _dbfs(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return np.asarray(20.0 * np.log10(np.maximum(rms, 1e-9)))


@dataclass
class SpeechGate:
    """Decides, per 30 ms frame of 16 kHz audio, whether there is speech.

    Args:
        kind: ``silero``, ``webrtc``, ``energy`` or ``off`` (everything counts as speech).
        aggressiveness: WebRTC VAD mode 0-3 (3 rejects the most non-speech).
        energy_dbfs: frames quieter than this are never speech (all kinds but ``off``).
        min_speech_ms: how much speech a clip needs before it is transcribed.

    """

    kind: VadKind = "silero"
    aggressiveness: int = 2
    energy_dbfs: float = -50.0
    min_speech_ms: int = 150
    _impl: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind == "webrtc":
            webrtcvad = require("webrtcvad", extra="voice", feature="WebRTC voice detection")
            self._impl = webrtcvad.Vad(self.aggressiveness)
        elif self.kind == "silero":
            self._impl = require(
                "faster_whisper.vad", extra="voice", feature="Silero voice detection"
            )

    def speech_frames(self, audio: Audio) -> npt.NDArray[np.bool_]:
        """Return one flag per 30 ms frame: True where there is speech."""
        samples = audio.resample(STT_RATE).samples
        frames = _frames(samples)
        if self.kind == "off":
            return np.ones(len(frames), dtype=bool)
        loud = _dbfs(frames) > self.energy_dbfs
        if self.kind == "energy" or not loud.any():
            return loud
        if self.kind == "webrtc":
            is_speech: Callable[[bytes, int], bool] = self._impl.is_speech
            pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).astype("<i2")
            return np.array(
                [bool(loud[i]) and is_speech(pcm[i].tobytes(), STT_RATE) for i in range(len(pcm))],
                dtype=bool,
            )
        opts = self._impl.VadOptions(min_speech_duration_ms=self.min_speech_ms,
                                     min_silence_duration_ms=100, speech_pad_ms=0)
        flags = np.zeros(len(frames), dtype=bool)
        for ts in self._impl.get_speech_timestamps(samples, opts):
            flags[ts["start"] // _FRAME : -(-ts["end"] // _FRAME)] = True
        return flags

    def has_speech(self, audio: Audio, *, window_s: float = 8.0) -> bool:
        """Return True when ``audio`` holds at least ``min_speech_ms`` of speech.

        Long clips are examined in ``window_s`` windows (overlapping by one second) and the
        search stops at the first window with speech, so a clip that starts talking costs a
        few milliseconds however long it is.
        """
        if self.kind == "off":
            return len(audio.samples) > 0
        samples = audio.resample(STT_RATE).samples
        size, step = int(window_s * STT_RATE), int((window_s - 1.0) * STT_RATE)
        for start in range(0, max(1, len(samples) - STT_RATE), step):
            window = Audio(samples[start : start + size], STT_RATE)
            if int(self.speech_frames(window).sum()) * FRAME_MS >= self.min_speech_ms:
                return True
        return False


@dataclass
class Endpointer:
    """Follows a live stream and says when an utterance has ended.

    Feed audio in any chunk size; every ``check_ms`` of new audio the last few seconds are
    re-examined. :attr:`ended` turns True once speech was heard and ``silence_ms`` of
    non-speech followed it.
    """

    gate: SpeechGate
    silence_ms: int = 700
    check_ms: int = 240
    started: bool = False
    trailing_silence_ms: int = 0
    _buf: list[npt.NDArray[np.float32]] = field(default_factory=list, repr=False)
    _total: int = 0
    _checked: int = 0

    @property
    def ended(self) -> bool:
        """Speech was heard and has been followed by enough silence."""
        return self.started and self.trailing_silence_ms >= self.silence_ms

    def feed(self, audio: Audio) -> None:
        """Add audio (any rate; resampled to 16 kHz) to the detector."""
        samples = audio.resample(STT_RATE).samples
        self._buf.append(samples)
        self._total += len(samples)
        if (self._total - self._checked) * 1000 < self.check_ms * STT_RATE:
            return
        self._checked = self._total
        window = int((self.silence_ms + 1500) * STT_RATE / 1000)
        tail = np.concatenate(self._buf)[-window:]
        self._buf = [tail]
        flags = self.gate.speech_frames(Audio(tail, STT_RATE))
        speech_at = np.flatnonzero(flags)
        if len(speech_at) * FRAME_MS >= self.gate.min_speech_ms:
            self.started = True
        if len(speech_at):
            self.trailing_silence_ms = (len(flags) - 1 - int(speech_at[-1])) * FRAME_MS
        else:
            self.trailing_silence_ms = len(flags) * FRAME_MS

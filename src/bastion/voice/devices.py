"""Microphone and speaker through sounddevice (PortAudio: Linux, macOS, Windows).

A machine without audio devices, or without the PortAudio library, gets one clear
:class:`~bastion.errors.AudioError` saying what to do instead (the ``--input``/``--output``
file mode needs no devices).
"""

from __future__ import annotations

import queue
import threading
from types import ModuleType
from typing import Any

import numpy as np

from bastion.errors import AudioError, MissingExtraError
from bastion.voice.audio import STT_RATE, Audio

HEADLESS_FIX = "use files instead: bastion voice --input question.wav --output answer.wav"


def _sounddevice() -> ModuleType:
    try:
        import sounddevice  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise MissingExtraError("audio input/output", "voice", "sounddevice") from exc
    except OSError as err:  # the module imports PortAudio at import time
        raise AudioError(
            "the PortAudio library is not installed, so no audio device can be opened",
            fix="apt-get install libportaudio2 (macOS: brew install portaudio); or "
            + HEADLESS_FIX,
        ) from err
    mod: ModuleType = sounddevice
    return mod


def _device(spec: str | None) -> int | str | None:
    if spec is None or spec == "":
        return None
    return int(spec) if spec.isdigit() else spec


def check_devices(
    *, need_input: bool, need_output: bool, input_device: str | None = None,
    output_device: str | None = None,
) -> None:
    """Raise :class:`AudioError` unless the wanted microphone/speaker exist."""
    sd = _sounddevice()
    try:
        devices: list[dict[str, Any]] = list(sd.query_devices())
    except Exception as exc:  # PortAudioError: no host API, no server
        raise AudioError(f"cannot list audio devices: {exc}", fix=HEADLESS_FIX) from exc
    for needed, key, spec, what in (
        (need_input, "max_input_channels", input_device, "microphone (audio input device)"),
        (need_output, "max_output_channels", output_device, "speaker (audio output device)"),
    ):
        if not needed:
            continue
        if not any(d.get(key, 0) > 0 for d in devices):
            raise AudioError(f"no {what} found on this machine", fix=HEADLESS_FIX)
        if spec is not None:
            try:
                sd.query_devices(_device(spec), kind="input" if "input" in key else "output")
            except Exception as err:
                raise AudioError(
                    f"audio device {spec!r} not found",
                    fix="list devices with: python -m sounddevice; set voice.input_device / "
                    "voice.output_device",
                ) from err


class Recorder:
    """Records the microphone at 16 kHz mono until :meth:`stop`.

    At most ``max_seconds`` are kept: a forgotten recording must not grow without bound.
    """

    def __init__(
        self, device: str | None = None, sample_rate: int = STT_RATE, max_seconds: float = 120.0
    ) -> None:
        self._sd = _sounddevice()
        self.sample_rate = sample_rate
        self._room = int(max_seconds * sample_rate)
        self.truncated = False
        self._chunks: list[np.ndarray[Any, Any]] = []
        self._stream = self._sd.InputStream(
            samplerate=sample_rate, channels=1, dtype="float32", device=_device(device),
            callback=self._callback,
        )

    def _callback(self, data: np.ndarray[Any, Any], frames: int, time: Any, status: Any) -> None:
        if self._room <= 0:
            self.truncated = True
            return
        piece = data[: self._room, 0].copy()
        self._room -= len(piece)
        self._chunks.append(piece)

    def start(self) -> None:
        """Start recording."""
        self._stream.start()

    def stop(self) -> Audio:
        """Stop and return what was recorded."""
        self._stream.stop()
        self._stream.close()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        return Audio(samples.astype(np.float32), self.sample_rate)


class Player:
    """Plays pieces of audio in order as they arrive.

    The first sentence plays while later ones are still being synthesised.
    """

    def __init__(self, sample_rate: int, device: str | None = None) -> None:
        self._sd = _sounddevice()
        self.sample_rate = sample_rate
        self._queue: queue.Queue[Audio | None] = queue.Queue()
        self._stream = self._sd.OutputStream(
            samplerate=sample_rate, channels=1, dtype="float32", device=_device(device)
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stream.start()
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            self._stream.write(piece.resample(self.sample_rate).samples.reshape(-1, 1))

    def play(self, audio: Audio) -> None:
        """Queue ``audio`` to be played after what is already queued."""
        self._queue.put(audio)

    def close(self) -> None:
        """Wait until everything queued has been played, then release the device."""
        self._queue.put(None)
        self._thread.join()
        self._stream.stop()
        self._stream.close()

"""Speech to text: the :class:`STT` seam and its faster-whisper backend."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bastion._extras import require
from bastion.config.model import SttConfig
from bastion.errors import AudioError, ConfigError
from bastion.voice.audio import STT_RATE, Audio
from bastion.voice.models import whisper_model
from bastion.voice.vad import SpeechGate


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of recognised speech, times in seconds from the start of the clip."""

    start: float
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Transcript:
    """What was said. ``speech`` is False when the VAD found none (``text`` is then empty)."""

    text: str
    language: str | None
    duration: float
    segments: tuple[Segment, ...] = ()
    speech: bool = True


@runtime_checkable
class STT(Protocol):
    """A speech recogniser. ``transcribe`` is blocking; callers run it in a worker thread."""

    name: str

    def transcribe(
        self, audio: Audio, *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        """Return the text spoken in ``audio`` (any sample rate)."""
        ...


class WhisperSTT:
    """faster-whisper (CTranslate2) on the shipped Whisper base model, behind a VAD gate.

    Args:
        config: the ``voice.stt`` section.
        gate: the VAD that keeps silence from Whisper; built from ``config`` when omitted.

    """

    name = "faster-whisper"

    def __init__(self, config: SttConfig | None = None, gate: SpeechGate | None = None) -> None:
        self.config = config or SttConfig()
        self.gate = gate or SpeechGate(self.config.vad, self.config.vad_aggressiveness)
        fw = require("faster_whisper", extra="voice", feature="speech recognition")
        ref = whisper_model(self.config.model)
        try:
            self.model = fw.WhisperModel(
                ref,
                device=self.config.device,
                compute_type=self.config.compute_type,
                cpu_threads=self.config.threads or os.cpu_count() or 1,
                local_files_only=True,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"cannot load Whisper model {self.config.model!r} "
                f"({self.config.device}/{self.config.compute_type}): {first}",
                fix="set voice.stt.model to 'base' (shipped) or a local CTranslate2 folder, "
                "and voice.stt.compute_type to int8 on CPU",
            ) from exc
        self._lock = threading.Lock()
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        self._languages = frozenset(_LANGUAGE_CODES)

    def transcribe(
        self, audio: Audio, *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        """Return the text spoken in ``audio``; silence and noise give an empty transcript."""
        audio = audio.resample(STT_RATE)
        lang = (language or self.config.language or "").strip().lower() or None
        if lang is not None and lang not in self._languages:
            raise AudioError(
                f"unknown language {lang!r}",
                fix="use an ISO 639-1 code Whisper knows (en, de, fr, es, ...) or leave it empty "
                "for auto-detection",
            )
        if not self.gate.has_speech(audio):
            return Transcript("", lang, audio.duration, (), speech=False)
        with self._lock:
            segments, info = self.model.transcribe(
                audio.samples,
                language=lang,
                beam_size=self.config.beam_size,
                vad_filter=self.config.whisper_vad_filter,
                initial_prompt=prompt,
                condition_on_previous_text=False,
            )
            kept = tuple(
                Segment(s.start, s.end, s.text.strip())
                for s in segments
                # Whisper's own "this was not speech" signal: drop such segments.
                if not (s.no_speech_prob > 0.6 and s.avg_logprob < -1.0) and s.text.strip()
            )
        text = " ".join(s.text for s in kept).strip()
        return Transcript(text, info.language, audio.duration, kept, speech=bool(text))

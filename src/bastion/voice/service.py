"""One object that owns the loaded speech models for a process (CLI, server, Wyoming)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from bastion import telemetry
from bastion.config.model import TtsConfig, VoiceConfig
from bastion.errors import ConfigError
from bastion.voice.audio import Audio, decode
from bastion.voice.stt import STT, Transcript, WhisperSTT
from bastion.voice.tts import TTS, create_tts

ENGINES = ("piper", "espeak")


class VoiceService:
    """Loads STT and TTS once, on first use, and runs them off the event loop.

    With ``voice.isolation: worker`` (the default) faster-whisper and Piper run in supervised
    child processes (:mod:`bastion.voice.engine`): a native crash costs one request.

    Args:
        config: the ``voice`` section.
        stt: a ready recogniser (tests and benchmarks share one); built from config otherwise.
        tts: ready synthesisers by engine name.

    """

    def __init__(
        self,
        config: VoiceConfig | None = None,
        *,
        stt: STT | None = None,
        tts: dict[str, TTS] | None = None,
    ) -> None:
        self.config = config or VoiceConfig()
        self._stt = stt
        self._tts: dict[str, TTS] = dict(tts or {})
        self._lock = threading.Lock()

    @property
    def stt(self) -> STT:
        """The recogniser (loaded on first use)."""
        with self._lock:
            if self._stt is None:
                if self.config.isolation == "worker":
                    from bastion.voice.engine import IsolatedSTT

                    self._stt = IsolatedSTT(self.config.stt)
                else:
                    self._stt = WhisperSTT(self.config.stt)
            return self._stt

    def tts(self, engine: str | None = None) -> TTS:
        """Return the synthesiser for ``engine`` (default ``voice.tts.engine``), loaded once."""
        name = engine or self.config.tts.engine
        if name not in ENGINES:
            raise ConfigError(
                f"unknown TTS engine {name!r}", fix=f"use one of: {', '.join(ENGINES)}"
            )
        with self._lock:
            if name not in self._tts:
                cfg = self.config.tts
                if name != cfg.engine:  # the other engine: its own default voice
                    cfg = TtsConfig(engine=name, speed=cfg.speed)  # type: ignore[arg-type]
                if name == "piper" and self.config.isolation == "worker":
                    from bastion.voice.engine import IsolatedTTS

                    self._tts[name] = IsolatedTTS(cfg)
                else:  # espeak-ng is a program of its own already
                    self._tts[name] = create_tts(cfg)
            return self._tts[name]

    async def tts_async(self, engine: str | None = None) -> TTS:
        """Like :meth:`tts`, loading in a worker thread."""
        return await asyncio.to_thread(self.tts, engine)

    def decode(self, data: bytes) -> Audio:
        """Decode and validate uploaded audio against the configured limits."""
        return decode(
            data,
            max_seconds=self.config.max_seconds,
            max_bytes=int(self.config.max_upload_mb * 2**20),
        )

    async def transcribe(
        self, audio: Audio, *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        """Transcribe in a worker thread."""
        with telemetry.span("voice.stt", {"bastion.voice.audio_seconds": audio.duration,
                                          "bastion.voice.model": self.config.stt.model}) as span:
            stt = await asyncio.to_thread(lambda: self.stt)
            out = await asyncio.to_thread(stt.transcribe, audio, language=language,
                                          prompt=prompt)
            span.set("bastion.voice.language", out.language)
            span.set("bastion.voice.speech", out.speech)
            return out

    async def synthesize(
        self, text: str, *, engine: str | None = None, speed: float | None = None
    ) -> AsyncIterator[Audio]:
        """Yield audio sentence by sentence, synthesising in a worker thread."""
        span = telemetry.start("voice.tts", {"bastion.voice.text_chars": len(text),
                                             "bastion.voice.engine":
                                             engine or self.config.tts.engine})
        seconds = 0.0
        try:
            tts = await self.tts_async(engine)
            it = iter(tts.synthesize(text, speed=speed))
            done = object()
            while (piece := await asyncio.to_thread(next, it, done)) is not done:
                seconds += piece.duration  # type: ignore[attr-defined]
                yield piece  # type: ignore[misc]
        finally:
            span.set("bastion.voice.audio_seconds", round(seconds, 3))
            span.end()

    async def warm(self, engine: str | None = None) -> None:
        """Load the models now (a server does this at start so the first request is fast)."""
        await asyncio.to_thread(lambda: (self.stt, self.tts(engine)))

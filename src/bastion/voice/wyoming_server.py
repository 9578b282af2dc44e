"""A Wyoming protocol server for bastion's STT and TTS, so Home Assistant can use them.

Home Assistant's Wyoming integration connects over TCP, asks ``describe`` and then sends
either ``transcribe`` + ``audio-start``/``audio-chunk``/``audio-stop`` (answered with a
``transcript``) or ``synthesize`` (answered with ``audio-start``/``audio-chunk``/``audio-stop``).
Start it with ``bastion voice wyoming --port 10300`` and add the Wyoming integration in Home
Assistant with this host and port.
"""

from __future__ import annotations

import asyncio
from functools import partial
from types import SimpleNamespace
from typing import Any

from bastion import __version__
from bastion._extras import require
from bastion.errors import AudioError, BastionError
from bastion.voice.audio import STT_RATE, from_pcm16
from bastion.voice.service import ENGINES, VoiceService

_SAMPLES_PER_CHUNK = 1024
_LANGUAGES = ["en"]  # the shipped models; Whisper itself also understands ~100 more


def _wyoming() -> Any:
    require("wyoming", extra="voice", feature="the Wyoming server")
    import wyoming.asr as asr
    import wyoming.audio as audio
    import wyoming.error as error
    import wyoming.event as event
    import wyoming.info as info
    import wyoming.server as server
    import wyoming.tts as tts

    return SimpleNamespace(asr=asr, audio=audio, error=error, event=event, info=info,
                           server=server, tts=tts)


def build_info(service: VoiceService) -> Any:
    """Return the ``info`` event describing the STT program and the TTS voices."""
    w = _wyoming()
    whisper = w.info.Attribution(name="OpenAI Whisper (faster-whisper)",
                                 url="https://github.com/SYSTRAN/faster-whisper")
    asr = w.info.AsrProgram(
        name="bastion-stt", attribution=whisper, installed=True,
        description="bastion speech to text (faster-whisper + VAD)", version=__version__,
        models=[w.info.AsrModel(
            name=service.config.stt.model, attribution=whisper, installed=True,
            description=f"Whisper {service.config.stt.model}", version=None,
            languages=_LANGUAGES,
        )],
    )
    voices = [
        w.info.TtsVoice(
            name=engine,
            attribution=w.info.Attribution(
                name="Piper" if engine == "piper" else "eSpeak NG",
                url="https://github.com/OHF-Voice/piper1-gpl" if engine == "piper"
                else "https://github.com/espeak-ng/espeak-ng",
            ),
            installed=True,
            description="en_US joe (Piper)" if engine == "piper" else "espeak-ng en-us",
            version=None,
            languages=["en_US"],
        )
        for engine in ENGINES
    ]
    tts = w.info.TtsProgram(
        name="bastion-tts",
        attribution=w.info.Attribution(name="bastion", url="https://github.com/"),
        installed=True, description="bastion text to speech", version=__version__,
        voices=voices,
    )
    return w.info.Info(asr=[asr], tts=[tts])


class _Handler:
    """One client connection (wraps wyoming's AsyncEventHandler, created per connection)."""

    def __init__(self, service: VoiceService, info: Any) -> None:
        self.service = service
        self.info = info
        self.w = _wyoming()
        self.pcm: list[bytes] = []
        self.size = 0
        self.language: str | None = None
        self.converter: Any = None

    async def handle(self, write: Any, event: Any) -> bool:
        w = self.w
        try:
            if w.info.Describe.is_type(event.type):
                await write(self.info.event())
            elif w.asr.Transcribe.is_type(event.type):
                self.language = w.asr.Transcribe.from_event(event).language
            elif w.audio.AudioStart.is_type(event.type):
                self.pcm, self.size = [], 0
                self.converter = w.audio.AudioChunkConverter(rate=STT_RATE, width=2, channels=1)
            elif w.audio.AudioChunk.is_type(event.type):
                chunk = w.audio.AudioChunk.from_event(event)
                conv = self.converter or w.audio.AudioChunkConverter(STT_RATE, 2, 1)
                self.converter = conv
                data = conv.convert(chunk).audio
                self.size += len(data)
                if self.size > self.service.config.max_seconds * STT_RATE * 2:
                    raise AudioError("the audio is too long",
                                     fix="send a shorter clip or raise voice.max_seconds")
                self.pcm.append(data)
            elif w.audio.AudioStop.is_type(event.type):
                audio = from_pcm16(b"".join(self.pcm), STT_RATE)
                self.pcm, self.size, self.converter = [], 0, None
                t = await self.service.transcribe(audio, language=self.language)
                await write(w.asr.Transcript(text=t.text, language=t.language).event())
            elif w.tts.Synthesize.is_type(event.type):
                await self._synthesize(write, w.tts.Synthesize.from_event(event))
        except BastionError as exc:
            await write(w.error.Error(text=exc.user_text(), code=type(exc).__name__).event())
        return True

    async def _synthesize(self, write: Any, syn: Any) -> None:
        w = self.w
        name = syn.voice.name if syn.voice is not None else None
        engine = name if name in ENGINES else None
        started = False
        rate = 0
        async for piece in self.service.synthesize(syn.text, engine=engine):
            if not started:
                rate = piece.sample_rate
                await write(w.audio.AudioStart(rate=rate, width=2, channels=1).event())
                started = True
            pcm = piece.resample(rate).pcm16()
            step = _SAMPLES_PER_CHUNK * 2
            for i in range(0, len(pcm), step):
                await write(w.audio.AudioChunk(rate=rate, width=2, channels=1,
                                               audio=pcm[i : i + step]).event())
        if not started:
            raise AudioError("nothing to say", fix="send text with words in it")
        await write(w.audio.AudioStop().event())


def _factory(service: VoiceService, info: Any, reader: Any, writer: Any) -> Any:
    w = _wyoming()
    handler = _Handler(service, info)

    class Conn(w.server.AsyncEventHandler):  # type: ignore[misc, name-defined]
        async def handle_event(self, event: Any) -> bool:
            return await handler.handle(self.write_event, event)

    return Conn(reader, writer)


async def start(service: VoiceService, host: str, port: int) -> Any:
    """Start serving in the background; returns the server (``await server.stop()``)."""
    w = _wyoming()
    info = build_info(service)
    server = w.server.AsyncTcpServer(host, port)
    await server.start(partial(_factory, service, info))
    return server


async def serve(service: VoiceService, host: str, port: int) -> None:
    """Load the models, then serve until cancelled."""
    await service.warm()
    server = await start(service, host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()

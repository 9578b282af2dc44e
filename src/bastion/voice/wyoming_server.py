"""A Wyoming protocol server for bastion's STT and TTS, so Home Assistant can use them.

Home Assistant's Wyoming integration connects over TCP, asks ``describe`` and then sends
either ``transcribe`` + ``audio-start``/``audio-chunk``/``audio-stop`` (answered with a
``transcript``) or ``synthesize`` (answered with ``audio-start``/``audio-chunk``/``audio-stop``).
Start it with ``bastion voice wyoming --port 10300`` and add the Wyoming integration in Home
Assistant with this host and port.

The protocol has no authentication, so the server defends itself: a peer outside ``allow``
(CIDRs; empty = any) is disconnected at once; event headers, data and payloads have size caps
checked before anything is read into memory; audio must be 8-48 kHz, 1-4 byte samples,
mono or stereo before it is converted (a rate of 1 Hz would make 16000 times the bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Sequence
from functools import partial
from types import SimpleNamespace
from typing import Any

from bastion import __version__
from bastion._extras import require
from bastion.errors import AudioError, BastionError, ConfigError
from bastion.voice.audio import STT_RATE, from_pcm16
from bastion.voice.service import ENGINES, VoiceService

_SAMPLES_PER_CHUNK = 1024
_LANGUAGES = ["en"]  # the shipped models; Whisper itself also understands ~100 more
MIN_RATE, MAX_RATE = 8_000, 48_000
WIDTHS = (1, 2, 3, 4)
CHANNELS = (1, 2)
MAX_HEADER = 64 * 1024  # one JSON line
MAX_DATA = 64 * 1024  # the event's extra JSON data
MAX_PAYLOAD = 1024 * 1024  # one audio chunk: over 5 s of 48 kHz stereo 16-bit
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProtocolLimit(AudioError):
    """A client broke one of the server's limits; the connection is closed after telling it."""


def check_format(rate: object, width: object, channels: object) -> None:
    """Raise :class:`AudioError` unless the audio format is one the server converts."""
    if not (isinstance(rate, int) and MIN_RATE <= rate <= MAX_RATE):
        raise AudioError(f"audio rate {rate!r} Hz is outside {MIN_RATE}-{MAX_RATE} Hz",
                         fix="send 16000 Hz audio (Home Assistant does)")
    if width not in WIDTHS:
        raise AudioError(f"audio width {width!r} is not 1-4 bytes per sample",
                         fix="send 16-bit audio (width 2)")
    if channels not in CHANNELS:
        raise AudioError(f"audio with {channels!r} channels is not mono or stereo",
                         fix="send mono audio (channels 1)")


async def read_event(reader: asyncio.StreamReader) -> Any:
    """Read one Wyoming event, refusing sizes over the caps before reading them.

    Returns ``None`` at end of stream; raises :class:`ProtocolLimit` for an oversized or
    malformed event (wyoming's own reader trusts ``payload_length``).
    """
    w = _wyoming()
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolLimit("the event header ended early", fix="send whole events") from exc
    except asyncio.LimitOverrunError as err:
        raise ProtocolLimit(f"an event header is over {MAX_HEADER} bytes",
                            fix="send smaller events") from err
    try:
        head = json.loads(line)
    except ValueError as err:
        raise ProtocolLimit("an event header is not JSON", fix="speak the Wyoming protocol"
                            ) from err
    if not isinstance(head, dict) or not isinstance(head.get("type"), str):
        raise ProtocolLimit("an event has no type", fix="speak the Wyoming protocol")
    given = head.get("data")
    data: dict[str, Any] = given if isinstance(given, dict) else {}
    data_length = _length(head.get("data_length"), MAX_DATA, "data")
    if data_length:
        try:
            extra = json.loads(await reader.readexactly(data_length))
        except ValueError as err:
            raise ProtocolLimit("event data is not JSON", fix="speak the Wyoming protocol"
                                ) from err
        if isinstance(extra, dict):
            data.update(extra)
    payload_length = _length(head.get("payload_length"), MAX_PAYLOAD, "payload")
    payload = await reader.readexactly(payload_length) if payload_length else None
    return w.event.Event(type=head["type"], data=data, payload=payload)


def _length(value: object, cap: int, what: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or value < 0:
        raise ProtocolLimit(f"the event's {what} length {value!r} is not a size",
                            fix="speak the Wyoming protocol")
    if value > cap:
        raise ProtocolLimit(f"the event's {what} of {value} bytes is over the {cap} byte limit",
                            fix="send audio in chunks of at most 1 MiB")
    return value


def parse_allow(cidrs: Sequence[str]) -> list[Network]:
    """Parse the ``--allow`` CIDRs, or raise a one-line :class:`ConfigError`."""
    out: list[Network] = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ConfigError(f"--allow {cidr!r} is not an address or network",
                              fix="use e.g. --allow 192.168.1.20 or --allow 10.0.0.0/24"
                              ) from exc
    return out


def peer_allowed(peer: object, allow: Sequence[Network]) -> bool:
    """Whether a connection from ``peer`` (``getpeername()``) may talk to the server."""
    if not allow:
        return True
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    ip = mapped or ip
    return any(ip in net for net in allow)


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
                check_format(chunk.rate, chunk.width, chunk.channels)  # before converting
                frames = len(chunk.audio) // (chunk.width * chunk.channels)
                self.size += -(-frames * STT_RATE // chunk.rate) * 2  # the converted size
                if self.size > self.service.config.max_seconds * STT_RATE * 2:
                    self.pcm, self.size, self.converter = [], 0, None
                    raise AudioError("the audio is too long",
                                     fix="send a shorter clip or raise voice.max_seconds")
                conv = self.converter or w.audio.AudioChunkConverter(STT_RATE, 2, 1)
                self.converter = conv
                self.pcm.append(conv.convert(chunk).audio)
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


async def _linger(reader: asyncio.StreamReader, writer: Any, limit_s: float = 1.0) -> None:
    """Let the client read our error before we close: stop writing, discard its bytes a moment.

    Closing with unread input would send a reset, which can destroy the error in flight.
    Bounded in time, and nothing is kept.
    """
    with contextlib.suppress(Exception):
        writer.write_eof()
        async with asyncio.timeout(limit_s):
            while await reader.read(65536):
                pass


def _factory(service: VoiceService, info: Any, allow: Sequence[Network], reader: Any,
             writer: Any) -> Any:
    w = _wyoming()
    handler = _Handler(service, info)

    class Conn(w.server.AsyncEventHandler):  # type: ignore[misc, name-defined]
        async def handle_event(self, event: Any) -> bool:
            return await handler.handle(self.write_event, event)

        async def run(self) -> None:
            """Wyoming's loop, with the bounded reader and the peer allowlist."""
            try:
                if not peer_allowed(self.writer.get_extra_info("peername"), allow):
                    return
                while True:
                    try:
                        event = await read_event(self.reader)
                    except ProtocolLimit as exc:
                        await self.write_event(
                            w.error.Error(text=exc.user_text(), code="ProtocolLimit").event())
                        await _linger(self.reader, self.writer)
                        return
                    if event is None or not await self.handle_event(event):
                        return
            finally:
                self.writer.close()
                await self.disconnect()

    return Conn(reader, writer)


async def start(service: VoiceService, host: str, port: int,
                allow: Sequence[Network] = ()) -> Any:
    """Start serving in the background; returns the server (``await server.stop()``).

    Only peers inside ``allow`` are served (empty: any).
    """
    w = _wyoming()
    info = build_info(service)
    server = w.server.AsyncTcpServer(host, port)
    await server.start(partial(_factory, service, info, list(allow)))
    return server


async def serve(service: VoiceService, host: str, port: int,
                allow: Sequence[Network] = ()) -> None:
    """Load the models, then serve until cancelled."""
    await service.warm()
    server = await start(service, host, port, allow)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()

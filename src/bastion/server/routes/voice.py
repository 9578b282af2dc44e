"""Speech routes: OpenAI-compatible transcription and speech, and a WebSocket voice turn.

- ``POST /v1/audio/transcriptions`` (multipart, like OpenAI's): ``file``, ``model`` (any name;
  the configured Whisper answers), ``language``, ``prompt``, ``response_format`` (json, text,
  verbose_json, srt, vtt).
- ``POST /v1/audio/speech`` (JSON, like OpenAI's): ``input``, ``model`` (``tts-1``/any = the
  configured engine; ``piper`` or ``espeak`` pick one), ``voice`` (OpenAI names use the
  configured voice; ``piper``/``espeak`` pick an engine), ``response_format`` (mp3, opus, aac,
  flac, wav, pcm = 24 kHz s16le), ``speed`` (0.25-4).
- ``WS /v1/voice/ws``: a full spoken turn, see :func:`voice_socket`. Auth: the bearer header
  or ``?token=``.
- ``GET /v1/voice``: whether spoken turns can work here (the voice extra is installed), so a
  client shows push-to-talk only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect, WebSocketState

from bastion._extras import require
from bastion.agent.events import AgentEvent
from bastion.agent.loop import Agent
from bastion.app import App
from bastion.errors import AudioError, BastionError
from bastion.messages import TextDelta
from bastion.server._turns import busy_sessions, check_session_id, make_agent
from bastion.server.contract import ApiModel, errors, media
from bastion.server.deps import get_app, ws_accept_subprotocol
from bastion.server.errors import ApiError
from bastion.server.events import event_payload
from bastion.server.responses import Transcript as TranscriptBody
from bastion.server.sse import StreamRedactor

if TYPE_CHECKING:  # the voice extra (numpy, models) is imported on first use, not at start-up
    from bastion.voice.audio import Audio
    from bastion.voice.service import VoiceService
    from bastion.voice.stt import Transcript

router = APIRouter(tags=["audio"])

Voice = Literal[
    "piper", "espeak", "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin",
    "nova", "onyx", "sage", "shimmer", "verse",
]
"""``voice`` of ``POST /v1/audio/speech``: an engine, or an OpenAI name (the configured voice)."""
MAX_INPUT_CHARS = 4096


def voice_service(conn: HTTPConnection) -> VoiceService:
    """Return the API's :class:`VoiceService` (built from ``config.voice`` on first use)."""
    state = conn.app.state
    service: VoiceService | None = getattr(state, "voice", None)
    if service is None:
        require("numpy", extra="voice", feature="speech")
        from bastion.voice.service import VoiceService

        app: App = get_app(conn)
        service = state.voice = VoiceService(app.config.voice)
    return service


# ---------------------------------------------------------------- transcriptions


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _subtitles(t: Transcript, fmt: str) -> str:
    sep = "," if fmt == "srt" else "."
    lines = [] if fmt == "srt" else ["WEBVTT", ""]
    for i, seg in enumerate(t.segments, 1):
        if fmt == "srt":
            lines.append(str(i))
        lines += [f"{_timestamp(seg.start, sep)} --> {_timestamp(seg.end, sep)}", seg.text, ""]
    return "\n".join(lines)


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise AudioError(
            f"the upload is over the {limit / 2**20:.0f} MB limit",
            fix="send a shorter clip or raise voice.max_upload_mb",
        )
    return data


@router.post("/v1/audio/transcriptions", summary="Speech to text (OpenAI-compatible)",
             response_model=None,
             responses=media("the transcript: JSON, or text/srt/vtt by response_format",
                             "text/plain", "text/vtt", json=TranscriptBody) | errors(400, 503))
async def transcriptions(
    request: Request,
    file: Annotated[UploadFile, File(description="audio: WAV, FLAC, MP3, OGG, WebM")],
    model: Annotated[str, Form(description="ignored: the configured Whisper answers")] = (
        "whisper-1"
    ),
    language: Annotated[str | None, Form(description="ISO code; empty = auto-detect")] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[
        Literal["json", "text", "verbose_json", "srt", "vtt"], Form()
    ] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
) -> Response:
    """Transcribe an uploaded clip. Silence gives empty text, not invented words."""
    service = voice_service(request)
    data = await _read_upload(file, int(service.config.max_upload_mb * 2**20))
    audio = await asyncio.to_thread(service.decode, data)
    t = await service.transcribe(audio, language=language or None, prompt=prompt or None)
    if response_format == "text":
        return PlainTextResponse(t.text)
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(_subtitles(t, response_format),
                                 media_type="text/vtt" if response_format == "vtt" else None)
    if response_format == "verbose_json":
        return JSONResponse({
            "task": "transcribe",
            "language": t.language,
            "duration": round(t.duration, 3),
            "text": t.text,
            "segments": [
                {"id": i, "start": s.start, "end": s.end, "text": s.text}
                for i, s in enumerate(t.segments)
            ],
        })
    return JSONResponse({"text": t.text})


# ---------------------------------------------------------------- speech


class SpeechRequest(ApiModel):
    """Body of ``POST /v1/audio/speech`` (OpenAI's shape)."""

    model_config = ConfigDict(extra="ignore")

    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    model: str = "tts-1"
    voice: Voice = Field(default="alloy", description="piper or espeak pick an engine; "
                         "OpenAI's voice names use the configured voice")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    instructions: str | None = None


def _engine(model: str, voice: str) -> str | None:
    """Return the engine ``voice`` or ``model`` names, or None for the configured one.

    The schema's ``Voice`` enum has already refused unknown voices.
    """
    from bastion.voice.service import ENGINES

    for name in (voice, model):
        if name in ENGINES:
            return name
    return None


@router.post("/v1/audio/speech", summary="Text to speech (OpenAI-compatible)",
             response_model=None,
             responses=media("the audio in response_format", "audio/mpeg", "audio/ogg",
                             "audio/aac", "audio/flac", "audio/wav", "audio/pcm", binary=True)
             | errors(400, 503))
async def speech(body: SpeechRequest, request: Request) -> Response:
    """Speak ``input``. ``pcm`` streams sentence by sentence; other formats come whole."""
    if not body.input.strip():
        raise ApiError(400, "input is empty", code="empty_input", param="input",
                       fix="send the text to speak")
    service = voice_service(request)
    engine = _engine(body.model, body.voice)
    from bastion.voice.audio import Audio, encode, media_type

    app = get_app(request)
    text = app.redactor.text(body.input)
    pieces = service.synthesize(text, engine=engine, speed=body.speed)
    first = await anext(pieces, None)  # errors surface as a status, not a broken stream
    if first is None:
        raise ApiError(400, "input has nothing to speak", code="empty_input", param="input",
                       fix="send words, not only markup")
    if body.response_format == "pcm":

        async def stream() -> AsyncIterator[bytes]:
            yield encode(first, "pcm")
            async for piece in pieces:
                yield encode(piece, "pcm")

        return StreamingResponse(stream(), media_type=media_type("pcm"))
    parts = [first] + [p async for p in pieces]
    audio = Audio.concat(parts, first.sample_rate)
    data = await asyncio.to_thread(encode, audio, body.response_format)
    return Response(data, media_type=media_type(body.response_format))


# ---------------------------------------------------------------- WebSocket voice turn


class _Start(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["start"] = "start"
    sample_rate: int = Field(default=16_000, ge=8000, le=48000)
    session_id: str | None = None
    language: str | None = None
    engine: Literal["piper", "espeak"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    vad: bool = Field(default=True, description="end the utterance after trailing silence")
    partials: bool = Field(default=True, description="send partial transcripts while listening")


async def _send(ws: WebSocket, payload: dict[str, Any]) -> None:
    await ws.send_text(json.dumps(payload))


async def _redacted(app: App, events: AsyncIterator[AgentEvent]) -> AsyncIterator[AgentEvent]:
    red = StreamRedactor(app.redactor)
    async for ev in events:
        if isinstance(ev, TextDelta):
            piece = red.feed(ev.text)
            if piece:
                yield TextDelta(piece)
            continue
        tail = red.flush()
        if tail:
            yield TextDelta(tail)
        yield ev


class _Utterance:
    """Audio of one utterance as it arrives, with endpointing and partial transcripts."""

    def __init__(self, ws: WebSocket, service: VoiceService, start: _Start) -> None:
        from bastion.voice.vad import Endpointer, SpeechGate

        self.ws, self.service, self.start = ws, service, start
        self.chunks: list[Audio] = []
        self.seconds = 0.0
        gate = SpeechGate(service.config.stt.vad, service.config.stt.vad_aggressiveness)
        self.endpoint = Endpointer(gate, silence_ms=service.config.endpoint_silence_ms)
        self._partial: asyncio.Task[None] | None = None
        self._partial_at = 0.0

    def audio(self) -> Audio:
        from bastion.voice.audio import Audio

        return Audio.concat(self.chunks, self.start.sample_rate)

    async def add(self, pcm: bytes) -> None:
        from bastion.voice.audio import from_pcm16

        piece = from_pcm16(pcm, self.start.sample_rate)
        self.chunks.append(piece)
        self.seconds += piece.duration
        if self.seconds > self.service.config.max_seconds:
            raise AudioError(
                f"the utterance is over the {self.service.config.max_seconds:.0f} s limit",
                fix="send {\"type\": \"end\"} sooner or raise voice.max_seconds",
            )
        if self.start.vad:
            await asyncio.to_thread(self.endpoint.feed, piece)
        due = self.seconds - self._partial_at >= 1.0
        if self.start.partials and due and (self._partial is None or self._partial.done()):
            self._partial_at = self.seconds
            self._partial = asyncio.create_task(self._send_partial(self.audio()))

    async def _send_partial(self, audio: Audio) -> None:
        t = await self.service.transcribe(audio, language=self.start.language)
        if t.text:
            await _send(self.ws, {"type": "partial", "text": t.text})

    async def settle(self) -> None:
        """Wait for a partial transcript still running (its result would come out of order)."""
        if self._partial is not None:
            with contextlib.suppress(Exception):
                await self._partial


async def _run_turn(
    ws: WebSocket, app: App, service: VoiceService, start: _Start, utt: _Utterance, sid: str
) -> None:
    from bastion.voice.turn import Spoken, VoiceDone, speak_events

    await utt.settle()
    audio = utt.audio()
    if not len(audio.samples):
        await _send(ws, {"type": "error", "message": "no audio was received before 'end'",
                         "fix": "send binary PCM frames, then {\"type\": \"end\"}"})
        return
    t = await service.transcribe(audio, language=start.language)
    await _send(ws, {"type": "transcript", "text": t.text, "language": t.language,
                     "duration": round(t.duration, 3), "speech": t.speech})
    if not t.text:
        await _send(ws, {"type": "turn_end", "heard": "", "answer": "", "audio_seconds": 0.0,
                         "sentences": 0})
        return
    if not busy_sessions(ws).claim(sid):
        await _send(ws, {"type": "error", "message": f"session {sid} is busy with another turn",
                         "fix": "wait for the running turn to finish"})
        return
    try:
        agent = await make_agent(app, sid)
        events = _redacted(app, agent.run(t.text, session_id=sid, actor="voice"))
        async for ev in speak_events(service, events, engine=start.engine, speed=start.speed,
                                     heard=t.text, redact=app.redactor.text):
            if isinstance(ev, Spoken):
                await _send(ws, {"type": "audio", "index": ev.index, "text": ev.text,
                                 "sample_rate": ev.audio.sample_rate, "format": "pcm_s16le",
                                 "seconds": round(ev.audio.duration, 3)})
                await ws.send_bytes(ev.audio.pcm16())
            elif isinstance(ev, VoiceDone):
                await _send(ws, {"type": "turn_end", "heard": ev.heard, "answer": ev.answer,
                                 "audio_seconds": round(ev.audio_seconds, 3),
                                 "sentences": ev.sentences, "error": ev.error})
            else:
                _, payload = event_payload(ev, app.redactor)
                await _send(ws, payload)
    finally:
        busy_sessions(ws).release(sid)


class VoiceStatus(ApiModel):
    """``GET /v1/voice``: can this server hold a spoken turn."""

    available: bool = Field(description="speech recognition and a voice are installed")
    missing: list[str] = Field(description="the Python modules that are not installed")
    fix: str | None = Field(description="how to install what is missing")


@router.get("/v1/voice", summary="Whether spoken turns work here (the voice extra)")
async def voice_status() -> VoiceStatus:
    """Say whether ``WS /v1/voice/ws`` can transcribe and speak (nothing is loaded)."""
    import importlib.util

    missing = [m for m in ("numpy", "faster_whisper", "piper")
               if importlib.util.find_spec(m) is None]
    return VoiceStatus(available=not missing, missing=missing,
                       fix="pip install 'bastion[voice]'" if missing else None)


@router.websocket("/v1/voice/ws")
async def voice_socket(ws: WebSocket) -> None:
    """Hold a spoken conversation over one WebSocket.

    Client -> server: optionally first a JSON ``{"type": "start", "sample_rate": 16000,
    "session_id", "language", "engine", "speed", "vad": true, "partials": true}``; then binary
    frames of signed 16-bit little-endian mono PCM; then ``{"type": "end"}`` (or, with
    ``vad``, the server ends the utterance after ``voice.endpoint_silence_ms`` of silence).
    Server -> client, per turn: ``partial`` transcripts while listening, ``transcript``, the
    agent's events (``text`` deltas, ``tool_started``, ``tool_finished``, ``usage``, ``done``,
    ``error``), for each spoken sentence an ``audio`` JSON header followed by one binary
    message of PCM at its ``sample_rate``, and ``turn_end``. The socket then listens for the
    next utterance in the same session.
    """
    await ws.accept(subprotocol=ws_accept_subprotocol(ws))
    app: App = get_app(ws)
    service = voice_service(ws)
    start = _Start()
    sid = "voice-" + Agent.new_session_id()
    await _send(ws, {"type": "ready", "session_id": sid, "sample_rate": start.sample_rate})
    utt: _Utterance | None = None
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            try:
                if msg.get("bytes") is not None:
                    utt = utt or _Utterance(ws, service, start)
                    await utt.add(msg["bytes"])
                    if start.vad and utt.endpoint.ended:
                        await _run_turn(ws, app, service, start, utt, sid)
                        utt = None
                    continue
                data = json.loads(msg.get("text") or "{}")
                kind = data.get("type") if isinstance(data, dict) else None
                if kind == "start":
                    start = _Start.model_validate(data)
                    sid = check_session_id(start.session_id) if start.session_id else sid
                    utt = None
                    await _send(ws, {"type": "ready", "session_id": sid,
                                     "sample_rate": start.sample_rate})
                elif kind == "end":
                    await _run_turn(ws, app, service, start, utt or _Utterance(ws, service, start),
                                    sid)
                    utt = None
                else:
                    raise ApiError(400, f"unknown message type {kind!r}", code="bad_message",
                                   fix="send start, binary PCM frames, or end")
            except (BastionError, ApiError, ValueError) as exc:
                utt = None
                message = exc.message if isinstance(exc, BastionError | ApiError) else str(exc)
                fix = exc.fix if isinstance(exc, BastionError | ApiError) else (
                    "send JSON messages: start, end")
                await _send(ws, {"type": "error",
                                 "message": app.redactor.text(" ".join(message.split())[:500]),
                                 "fix": fix})
    except WebSocketDisconnect:
        pass
    finally:
        if ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close()


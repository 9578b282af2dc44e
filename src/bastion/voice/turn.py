"""A voice turn: audio in -> transcript -> the agent's streamed answer -> speech out.

The agent's text is cut into sentences as it streams; each finished sentence goes to the TTS
engine in a worker thread while the model keeps writing, so the first sentence can be heard
before the answer is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.agent.events import AgentEvent, TurnDone, TurnError
from bastion.messages import TextDelta
from bastion.voice.audio import Audio
from bastion.voice.stt import Transcript
from bastion.voice.text import SentenceSplitter

if TYPE_CHECKING:
    from bastion.agent.loop import Agent
    from bastion.voice.service import VoiceService


@dataclass(frozen=True, slots=True)
class Heard:
    """The final transcript of what the user said (empty when there was no speech)."""

    transcript: Transcript


@dataclass(frozen=True, slots=True)
class Spoken:
    """Audio for one sentence of the answer, in order (``index`` counts from 0)."""

    audio: Audio
    text: str
    index: int


@dataclass(frozen=True, slots=True)
class VoiceDone:
    """The turn is over. ``error`` is one clear line when the agent failed."""

    heard: str
    answer: str
    audio_seconds: float
    sentences: int
    error: str | None = None


VoiceEvent = Heard | Spoken | VoiceDone | AgentEvent


@dataclass(frozen=True, slots=True)
class _Failed:
    exc: BaseException


_END = object()


async def speak_events(
    service: VoiceService,
    events: AsyncIterator[AgentEvent],
    *,
    engine: str | None = None,
    speed: float | None = None,
    heard: str = "",
    redact: Callable[[str], str] | None = None,
) -> AsyncIterator[AgentEvent | Spoken | VoiceDone]:
    """Pass ``events`` through and add :class:`Spoken` audio as sentences complete.

    ``redact`` is applied to each sentence before it is spoken (a sentence boundary needs
    whitespace, so a secret, a whitespace-free token, is never split across two sentences).
    """
    clean = redact or (lambda text: text)
    tts = await service.tts_async(engine)
    out: asyncio.Queue[object] = asyncio.Queue()
    sentences: asyncio.Queue[str | None] = asyncio.Queue()
    result: dict[str, str | None] = {"answer": "", "error": None}

    async def produce() -> None:
        splitter = SentenceSplitter()
        streamed = False
        try:
            async for ev in events:
                await out.put(ev)
                if isinstance(ev, TextDelta):
                    streamed = True
                    for s in splitter.feed(ev.text):
                        await sentences.put(s)
                elif isinstance(ev, TurnDone):
                    result["answer"] = ev.answer
                    if not streamed:  # a backend that does not stream: speak the whole answer
                        splitter.feed(ev.answer)
                elif isinstance(ev, TurnError):
                    result["error"] = ev.message
            for s in splitter.flush():
                await sentences.put(s)
        except BaseException as exc:
            await out.put(_Failed(exc))
            raise
        finally:
            await sentences.put(None)

    async def speak() -> None:
        index = 0
        seconds = 0.0
        try:
            while (raw := await sentences.get()) is not None:
                sentence = clean(raw)
                pieces = await asyncio.to_thread(
                    lambda s=sentence: list(tts.synthesize(s, speed=speed))  # type: ignore[misc]
                )
                for audio in pieces:
                    seconds += audio.duration
                    await out.put(Spoken(audio, sentence, index))
                    index += 1
        except BaseException as exc:
            await out.put(_Failed(exc))
            raise
        await out.put(
            VoiceDone(heard, clean(result["answer"] or ""), seconds, index, result["error"])
        )
        await out.put(_END)

    tasks = [asyncio.create_task(produce()), asyncio.create_task(speak())]
    try:
        while (item := await out.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t


async def voice_turn(
    service: VoiceService,
    agent: Agent,
    audio: Audio,
    *,
    session_id: str | None = None,
    language: str | None = None,
    engine: str | None = None,
    speed: float | None = None,
    redact: Callable[[str], str] | None = None,
) -> AsyncIterator[VoiceEvent]:
    """Run one spoken turn.

    Yields :class:`Heard`, the agent's events with :class:`Spoken` audio interleaved, then
    :class:`VoiceDone`. Silence ends the turn at once with empty text.
    """
    transcript = await service.transcribe(audio, language=language)
    yield Heard(transcript)
    if not transcript.text:
        yield VoiceDone("", "", 0.0, 0)
        return
    async for ev in speak_events(
        service,
        agent.run(transcript.text, session_id=session_id, actor="voice"),
        engine=engine,
        speed=speed,
        heard=transcript.text,
        redact=redact,
    ):
        yield ev


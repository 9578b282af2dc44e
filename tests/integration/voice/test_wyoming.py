"""The Wyoming server (what Home Assistant speaks) over real TCP on loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from bastion.voice.audio import from_pcm16
from bastion.voice.service import VoiceService
from bastion.voice.wyoming_server import start
from tests.unit.voice._shared import word_accuracy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def port(voice: VoiceService) -> AsyncIterator[int]:
    p = _free_port()
    server = await start(voice, "127.0.0.1", p)
    yield p
    await server.stop()


async def test_describe_synthesize_and_transcribe(port: int) -> None:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await client.read_event())
        assert info.asr[0].models[0].name == "base"
        assert {v.name for v in info.tts[0].voices} == {"piper", "espeak"}

        text = "Turn on the porch light, please."
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name="piper")).event())
        start_ev = AudioStart.from_event(await client.read_event())
        pcm = b""
        while True:
            ev = await client.read_event()
            if AudioStop.is_type(ev.type):
                break
            pcm += AudioChunk.from_event(ev).audio
        audio = from_pcm16(pcm, start_ev.rate)
        assert start_ev.rate == 22_050 and 1.0 < audio.duration < 6.0

        # Home Assistant streams 16 kHz microphone audio; send Piper's at 22 kHz to test the
        # conversion too.
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=22_050, width=2, channels=1).event())
        for i in range(0, len(pcm), 4096):
            await client.write_event(
                AudioChunk(rate=22_050, width=2, channels=1, audio=pcm[i : i + 4096]).event())
        await client.write_event(AudioStop().event())
        transcript = Transcript.from_event(await client.read_event())
        assert word_accuracy(text, transcript.text) >= 0.85, transcript.text


async def test_errors_come_back_as_error_events(port: int) -> None:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text="```").event())
        ev = await client.read_event()
        assert Error.is_type(ev.type) and "nothing to say" in Error.from_event(ev).text
        await client.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
        await client.write_event(AudioStop().event())  # no audio at all
        ev = await client.read_event()
        assert Transcript.is_type(ev.type) and Transcript.from_event(ev).text == ""

"""Recognition accuracy on speech bastion did not make (espeak-ng), and TTS -> STT round trips."""

from __future__ import annotations

from bastion.voice.audio import Audio, silence
from bastion.voice.service import VoiceService
from tests.unit.voice._shared import espeak, word_accuracy

SENTENCES = [
    "Please turn off the lights in the kitchen.",
    "What is the weather like in Berlin tomorrow?",
    "Set a timer for ten minutes.",
    "Remind me to call my mother this evening.",
    "How many days are there in a leap year?",
    "Open the garage door and switch on the heating.",
    "Read me the latest news about the stock market.",
    "Play some relaxing music in the living room.",
]


def _joined(pieces: list[Audio]) -> Audio:
    gap = silence(0.4)
    parts: list[Audio] = []
    for p in pieces:
        parts += [p, gap]
    return Audio.concat(parts, 16_000)


async def test_espeak_speech_word_accuracy_at_least_85_percent(voice: VoiceService) -> None:
    clip = _joined([espeak(s) for s in SENTENCES])
    assert clip.duration < 30  # one Whisper window
    t = await voice.transcribe(clip)  # language auto-detected
    assert t.language == "en"
    accuracy = word_accuracy(" ".join(SENTENCES), t.text)
    assert accuracy >= 0.85, (accuracy, t.text)


async def test_piper_to_whisper_round_trip(voice: VoiceService) -> None:
    text = "Good morning. Your first meeting starts at nine, and it will rain after lunch."
    pieces = [a async for a in voice.synthesize(text, engine="piper")]
    assert len(pieces) == 2
    t = await voice.transcribe(Audio.concat(pieces, 22_050))
    assert word_accuracy(text, t.text) >= 0.85, t.text


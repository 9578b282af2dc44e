"""A voice turn drives the agent (scripted model) with the real STT and TTS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bastion.agent.events import TurnDone
from bastion.app import App, build_app
from bastion.config.model import ApiConfig, Config, MemoryConfig
from bastion.llm.base import Model
from bastion.messages import TextDelta
from bastion.testing import ScriptedModel, say
from bastion.voice.audio import silence
from bastion.voice.service import VoiceService
from bastion.voice.turn import Heard, Spoken, VoiceDone, speak_events, voice_turn
from tests.fakes.gated_model import GatedModel
from tests.unit.voice._shared import espeak, word_accuracy

SECRET = "tok-voice-9c1d2e3f4a5b"


@pytest.fixture
def make_app() -> Iterator[object]:
    apps: list[App] = []

    def make(model: Model) -> App:
        config = Config(api=ApiConfig(token=SECRET), memory=MemoryConfig(enabled=False))
        app = build_app(config, model=model)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.audit.close()


async def test_full_turn_hears_answers_and_speaks(voice: VoiceService, make_app) -> None:
    model = ScriptedModel(say("Paris is the capital of France. It sits on the river Seine."))
    app = make_app(model)
    question = "What is the capital of France?"
    events = [ev async for ev in voice_turn(voice, app.agent(), espeak(question),
                                             engine="espeak")]
    heard = events[0]
    assert isinstance(heard, Heard) and word_accuracy(question, heard.transcript.text) >= 0.8
    assert model.seen[0].messages[-1].content == heard.transcript.text  # the agent got it
    spoken = [e for e in events if isinstance(e, Spoken)]
    assert [s.text for s in spoken] == ["Paris is the capital of France.",
                                       "It sits on the river Seine."]
    assert [s.index for s in spoken] == [0, 1]
    assert all(0.5 < s.audio.duration < 10 for s in spoken)
    done = events[-1]
    assert isinstance(done, VoiceDone) and done.error is None
    assert done.answer.startswith("Paris") and done.sentences == 2
    assert done.audio_seconds == pytest.approx(sum(s.audio.duration for s in spoken))
    assert any(isinstance(e, TurnDone) for e in events)


async def test_silence_ends_the_turn_without_asking_the_model(voice: VoiceService,
                                                              make_app) -> None:
    model = ScriptedModel()  # raises if called
    events = [ev async for ev in voice_turn(voice, make_app(model).agent(), silence(2.0))]
    assert isinstance(events[0], Heard) and events[0].transcript.text == ""
    assert isinstance(events[-1], VoiceDone) and events[-1].sentences == 0
    assert model.seen == []


async def test_first_sentence_is_spoken_while_the_model_is_still_writing(
    voice: VoiceService, make_app
) -> None:
    model = GatedModel("The first sentence is ready now.", "The second one comes later.")
    app = make_app(model)
    got: list[object] = []

    async def run() -> None:
        async for ev in speak_events(voice, app.agent().run("hi"), engine="espeak"):
            got.append(ev)
            if isinstance(ev, Spoken) and ev.index == 0:
                assert model.waited and not model.gate.is_set()
                model.gate.set()  # only now may the model finish its answer

    # If speech waited for the whole answer, the gate would never open: bounded, not timed.
    await asyncio.wait_for(run(), 120)
    spoken = [e.text for e in got if isinstance(e, Spoken)]
    assert spoken == ["The first sentence is ready now.", "The second one comes later."]


async def test_secrets_are_not_spoken(voice: VoiceService, make_app) -> None:
    app = make_app(ScriptedModel(say(f"Your token is {SECRET} so keep it safe.")))
    events = [ev async for ev in speak_events(voice, app.agent().run("token?"), engine="espeak",
                                              redact=app.redactor.text)]
    spoken = " ".join(e.text for e in events if isinstance(e, Spoken))
    assert SECRET not in spoken and "keep it safe" in spoken
    done = events[-1]
    assert isinstance(done, VoiceDone) and SECRET not in done.answer
    assert any(isinstance(e, TextDelta) for e in events)

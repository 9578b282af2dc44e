"""Each pattern on real models: the shipped SmolLM2 embedded and a llama.cpp server node."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from bastion.config.model import Config
from bastion.llm.base import Model
from bastion.llm.http import PROFILES, HttpModel
from bastion.llm.worker import WorkerModel
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from bastion.models import create_model
from bastion.patterns.cascade import CascadeModel
from bastion.patterns.draft_verify import DraftVerifyModel
from bastion.patterns.vote import VoteModel
from tests.integration.cluster._procs import Proc, free_port, llama_server

pytestmark = pytest.mark.real_model

ASK = [Message("user", "What is the capital of France? Answer in one word.")]
WEATHER = ToolSpec("get_weather", "Current weather for a city", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
SHORT = ChatSettings(max_tokens=16)


@pytest.fixture(scope="module")
def node() -> Iterator[Proc]:
    from bastion.llm.embedded import shipped_model_path

    proc = llama_server(shipped_model_path(), free_port())
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def embedded() -> Iterator[WorkerModel]:
    model = WorkerModel.load(n_ctx=1024, n_threads=1)
    yield model
    model.close()


async def events_of(model: Model, messages: Sequence[Message] = ASK,
                    tools: Sequence[ToolSpec] = (), settings: ChatSettings = SHORT
                    ) -> list[ModelEvent]:
    events = [ev async for ev in model.chat(messages, tools, settings=settings)]
    assert sum(isinstance(e, Finish) for e in events) == 1 and isinstance(events[-1], Finish)
    return events


def text_of(events: list[ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_cascade_from_config_scores_and_escalates(node: Proc) -> None:
    cfg = Config.model_validate({
        "model": {"backend": "pattern", "n_ctx": 1024},
        "patterns": {"kind": "cascade", "min_logprob": -50.0, "models": [
            {"backend": "embedded", "n_ctx": 1024, "n_threads": 1},
            {"backend": "openai", "profile": "llamacpp", "base_url": node.url,
             "name": "smollm2-135m"}]},
    })
    cascade = create_model(cfg)
    assert isinstance(cascade, CascadeModel)
    try:
        events = await events_of(cascade)
        rec = cascade.history[-1]
        assert rec.escalations == [] and text_of(events).strip()
        (lp,) = rec.logprobs.values()  # the embedded model scored its own answer
        assert -50.0 < lp < 0.0
        cascade.min_logprob = lp + 0.01  # now the same answer is not confident enough
        events = await events_of(cascade)
        rec = cascade.history[-1]
        assert [r for _, r in rec.escalations] == ["low_confidence"]
        assert text_of(events).strip()  # the node answered
        assert sum(isinstance(e, Usage) for e in events) >= 1
    finally:
        await cascade.aclose()


async def test_vote_self_consistency_tool_calls_once(embedded: WorkerModel) -> None:
    vote = VoteModel([embedded], samples=3, temperature=0.8)
    settings = ChatSettings(max_tokens=32, tool_choice="get_weather")
    events = await events_of(vote, [Message("user", "What's the weather in Lisbon?")],
                             [WEATHER], settings)
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    rec = vote.history[-1]
    assert sum(rec.votes.values()) + rec.failed == 3
    assert rec.votes[rec.winner] == max(rec.votes.values())


async def test_draft_verify_embedded_drafts_node_verifies(
    embedded: WorkerModel, node: Proc
) -> None:
    verifier = HttpModel("smollm2-135m", quirks=PROFILES["llamacpp"], base_url=node.url)
    dv = DraftVerifyModel(embedded, verifier)
    try:
        events = await events_of(dv)
        rec = dv.history[-1]
        assert rec.outcome in ("approved", "revised")
        assert text_of(events).strip()
        assert not any(isinstance(e, ToolCallEvent) for e in events)
    finally:
        await verifier.aclose()

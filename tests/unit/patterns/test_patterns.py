from __future__ import annotations

from collections.abc import Sequence

import pytest

from bastion.config.model import Config
from bastion.errors import ConfigError
from bastion.messages import (
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from bastion.patterns.cascade import CascadeModel
from bastion.patterns.draft_verify import DraftVerifyModel
from bastion.patterns.factory import create_pattern_model
from bastion.patterns.vote import VoteModel
from bastion.testing import Reply, ScriptedModel, call, say
from tests.fakes.chunked import ChunkedModel

WEATHER = ToolSpec("weather", "weather", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
ASK = [Message("user", "weather in Paris?")]


async def run(model: object, tools: Sequence[ToolSpec] = ()) -> tuple[str, list[ToolCall],
                                                                      list[ModelEvent]]:
    events = [ev async for ev in model.chat(ASK, tools)]  # type: ignore[attr-defined]
    assert sum(isinstance(e, Finish) for e in events) == 1 and isinstance(events[-1], Finish)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    return text, calls, events


class Scorer(ScriptedModel):
    """A scripted model that can score its answers (like the embedded backend)."""

    def __init__(self, *replies: Reply, logprob: float) -> None:
        super().__init__(*replies)
        self.logprob = logprob

    async def score(self, messages: object, prefix: str, options: list[str]) -> list[float]:
        return [self.logprob * (len(o) // 4 + 1) for o in options]


async def test_cascade_keeps_a_good_small_answer() -> None:
    small, large = ScriptedModel(call("weather", city="Paris")), ScriptedModel()
    cascade = CascadeModel([small, large])
    _, calls, _ = await run(cascade, [WEATHER])
    assert [c.arguments for c in calls] == [{"city": "Paris"}]
    assert large.seen == [] and cascade.history[-1].answered_by == "scripted"


@pytest.mark.parametrize(("reply", "reason"), [
    (call("weather"), "invalid_tool_call"),  # required argument missing
    (call("forecast", city="Paris"), "invalid_tool_call"),  # unknown tool
    (call("weather", city=3), "invalid_tool_call"),  # wrong type
    (Reply(fail=True), "invalid_tool_call"),  # backend gave up on the JSON
    (say(""), "empty"),
])
async def test_cascade_escalates_on_bad_small_reply(reply: Reply, reason: str) -> None:
    small = ScriptedModel(reply)
    large = ChunkedModel("", calls=[ToolCall("weather", {"city": "Paris"}, "big")], name="large")
    cascade = CascadeModel([small, large])
    _, calls, events = await run(cascade, [WEATHER])
    assert [c.id for c in calls] == ["big"]  # only the large model's call, once
    assert cascade.history[-1].escalations == [("scripted", reason)]
    assert cascade.history[-1].answered_by == "large"
    assert any(isinstance(e, Usage) for e in events)


async def test_cascade_logprob_signal() -> None:
    unsure = Scorer(say("Maybe Paris is sunny"), logprob=-4.0)
    large = ChunkedModel("It is sunny in Paris.", name="large")
    cascade = CascadeModel([unsure, large], min_logprob=-2.5)
    text, _, _ = await run(cascade)
    assert text == "It is sunny in Paris."
    rec = cascade.history[-1]
    assert rec.escalations == [("scripted", "low_confidence")]
    assert rec.logprobs["scripted"] == pytest.approx(-4.0)
    sure = Scorer(say("Sunny."), logprob=-0.3)
    cascade = CascadeModel([sure, ChunkedModel("x", name="large")], min_logprob=-2.5)
    assert (await run(cascade))[0] == "Sunny."


async def test_vote_majority_on_tool_calls_emits_winner_once() -> None:
    m = ScriptedModel(call("weather", city="Paris"), call("weather", city="Rome"),
                      call("weather", city="Paris"))
    vote = VoteModel([m], samples=3)
    _, calls, events = await run(vote, [WEATHER])
    assert [c.arguments for c in calls] == [{"city": "Paris"}]
    assert vote.history[-1].votes == {
        'calls:[["weather", {"city": "Paris"}]]': 2, 'calls:[["weather", {"city": "Rome"}]]': 1}
    # first sample greedy, the others sampled with distinct seeds
    temps = [(s.settings.temperature, s.settings.seed) for s in m.seen]
    assert temps[0][0] == 0.0 and {t for t, _ in temps[1:]} == {0.7}
    assert len({seed for _, seed in temps[1:]}) == 2
    usage = [e for e in events if isinstance(e, Usage)]
    assert len(usage) == 1


async def test_vote_text_normalised_and_ties_go_first() -> None:
    a = ScriptedModel(say("Paris."))
    b = ScriptedModel(say("paris"))
    c = ScriptedModel(say("Rome"))
    assert (await run(VoteModel([a, b, c], samples=1)))[0] == "Paris."
    x, y = ScriptedModel(say("one")), ScriptedModel(say("two"))
    assert (await run(VoteModel([x, y], samples=1)))[0] == "one"


async def test_vote_ignores_failed_samples() -> None:
    m = ScriptedModel(Reply(fail=True), say("ok"), Reply(fail=True))
    vote = VoteModel([m], samples=3)
    assert (await run(vote))[0] == "ok" and vote.history[-1].failed == 2


async def test_draft_verify_approved_emits_the_draft() -> None:
    drafter = ScriptedModel(call("weather", city="Paris"))
    verifier = ChunkedModel("APPROVED", size=2, name="verifier")
    dv = DraftVerifyModel(drafter, verifier)
    _, calls, _ = await run(dv, [WEATHER])
    assert [c.arguments for c in calls] == [{"city": "Paris"}]
    assert dv.history[-1].outcome == "approved"
    prompt = verifier.seen[0][-1].content
    assert 'weather({"city": "Paris"})' in prompt


async def test_draft_verify_revision_streams_the_verifier() -> None:
    drafter = ScriptedModel(say("It is snowing"))
    verifier = ChunkedModel("APPROX. It is sunny in Paris.", size=3, name="verifier")
    dv = DraftVerifyModel(drafter, verifier)
    text, calls, _ = await run(dv)
    assert text == "APPROX. It is sunny in Paris." and calls == []
    assert dv.history[-1].outcome == "revised"
    drafter = ScriptedModel(say("It is snowing"))
    verifier = ChunkedModel("", calls=[ToolCall("weather", {"city": "Paris"}, "v")], name="v")
    _, calls, _ = await run(DraftVerifyModel(drafter, verifier), [WEATHER])
    assert [c.id for c in calls] == ["v"]


async def test_draft_verify_without_draft_asks_verifier_directly() -> None:
    dv = DraftVerifyModel(ScriptedModel(Reply(fail=True)), ChunkedModel("fine", name="v"))
    assert (await run(dv))[0] == "fine" and dv.history[-1].outcome == "no_draft"


def test_factory_validation() -> None:
    with pytest.raises(ConfigError, match="two models"):
        CascadeModel([ScriptedModel()])
    cfg = Config.model_validate({"model": {"backend": "pattern"},
                                 "patterns": {"kind": "cascade"}})
    with pytest.raises(ConfigError, match="needs its models"):
        create_pattern_model(cfg)
    with pytest.raises(ValueError, match="two models"):
        Config.model_validate({"patterns": {"kind": "draft_verify", "models": [{}]}})


async def test_factory_shares_identical_models() -> None:
    cfg = Config.model_validate({"model": {"backend": "pattern"}, "patterns": {
        "kind": "draft_verify", "models": [
            {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "name": "m"},
            {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "name": "m"}]}})
    model = create_pattern_model(cfg)
    assert isinstance(model, DraftVerifyModel) and model.drafter is model.verifier
    await model.aclose()

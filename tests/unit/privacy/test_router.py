from __future__ import annotations

import json
from typing import Any

import pytest

from bastion.errors import ModelError, ModelOutputError
from bastion.messages import (
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
)
from bastion.privacy.router import PrivacyRouter
from bastion.testing import ScriptedModel, say
from tests.fakes.chunked import ChunkedModel

from ._fake_detect import policy

CARD = "4111 1111 1111 1111"
SEND = ToolSpec("send_email", "send", {"type": "object", "properties": {
    "to": {"type": "string"}, "body": {"type": "string"}}})


class Audit:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def record(self, kind: str, **fields: Any) -> int:
        self.rows.append({"kind": kind, **fields})
        return len(self.rows)


async def run(model: PrivacyRouter, messages: list[Message], tools: list[ToolSpec] | None = None
              ) -> tuple[str, list[ToolCall], list[ModelEvent]]:
    events = [ev async for ev in model.chat(messages, tools or [])]
    text = "".join(ev.text for ev in events if isinstance(ev, TextDelta))
    calls = [ev.call for ev in events if isinstance(ev, ToolCallEvent)]
    assert sum(isinstance(ev, Finish) for ev in events) == 1
    assert isinstance(events[-1], Finish)
    return text, calls, events


def sent_text(msgs: list[Message]) -> str:
    return json.dumps([m.to_openai() for m in msgs])


async def test_redacts_for_remote_and_restores_text_across_chunks() -> None:
    local = ScriptedModel()
    remote = ChunkedModel("Hello <PERSON_1>, I will mail <EMAIL_ADDRESS_1> and <PERSON_2>.", 4)
    audit = Audit()
    router = PrivacyRouter(local, remote, policy(), audit=audit)
    msgs = [Message("system", "You are bastion."),
            Message("user", "I am Ada Lovelace (ada@example.org); greet me and Alan Turing.")]
    text, _, _ = await run(router, msgs)
    assert text == "Hello Ada Lovelace, I will mail ada@example.org and Alan Turing."
    seen = sent_text(remote.seen[0])
    for value in ("Ada Lovelace", "ada@example.org", "Alan Turing"):
        assert value not in seen
    assert "<PERSON_1>" in seen and "<PERSON_2>" in seen and "<EMAIL_ADDRESS_1>" in seen
    assert "You are bastion." in seen  # allow-listed term untouched
    assert local.seen == []
    (row,) = audit.rows
    assert row["kind"] == "privacy.route" and row["decision"] == "remote_redacted"
    assert row["detail"]["classes"] == {"PERSON": 2, "EMAIL_ADDRESS": 1}
    assert "Ada" not in json.dumps(row) and "example.org" not in json.dumps(row)


async def test_local_only_class_keeps_everything_local() -> None:
    local = ScriptedModel(say("ok, noted"))
    remote = ChunkedModel("never")
    audit = Audit()
    router = PrivacyRouter(local, remote, policy(), audit=audit)
    msgs = [Message("user", f"Ada Lovelace pays with {CARD}")]
    text, _, _ = await run(router, msgs)
    assert text == "ok, noted"
    assert remote.seen == []
    assert local.seen[0].messages[0].content == msgs[0].content  # local sees it unredacted
    row = audit.rows[0]
    assert row["decision"] == "local" and row["detail"]["local_only"] == ["CREDIT_CARD"]
    assert CARD not in json.dumps(audit.rows)


async def test_tool_results_count_too() -> None:
    local = ScriptedModel(say("done"))
    remote = ChunkedModel("never")
    router = PrivacyRouter(local, remote, policy())
    msgs = [
        Message("user", "read the file"),
        Message("assistant", "", tool_calls=[ToolCall("read_file", {"path": "a.txt"}, "c1")]),
        Message("tool", f"card: {CARD}", tool_call_id="c1", name="read_file"),
    ]
    await run(router, msgs)
    assert remote.seen == [] and len(local.seen) == 1


async def test_history_tool_call_arguments_are_redacted() -> None:
    remote = ChunkedModel("sent")
    router = PrivacyRouter(ScriptedModel(), remote, policy())
    msgs = [
        Message("user", "mail him"),
        Message("assistant", "", tool_calls=[
            ToolCall("send_email", {"to": "alan@bletchley.uk", "body": "hi"}, "c1")]),
        Message("tool", "sent", tool_call_id="c1", name="send_email"),
    ]
    await run(router, msgs, [SEND])
    call = remote.seen[0][1].tool_calls[0]
    assert call.arguments == {"to": "<EMAIL_ADDRESS_1>", "body": "hi"} and call.id == "c1"


async def test_tool_call_arguments_from_remote_are_restored_once() -> None:
    remote = ChunkedModel("", calls=[ToolCall("send_email", {
        "to": "<EMAIL_ADDRESS_1>", "body": "Dear <PERSON_1>"}, "call_x")])
    # restored only into a tool the composition root says cannot send data out (F11)
    router = PrivacyRouter(ScriptedModel(), remote, policy(), egress=lambda name: False)
    _, calls, _ = await run(router, [Message("user", "email Ada Lovelace at ada@example.org")],
                            [SEND])
    assert len(calls) == 1
    assert calls[0].arguments == {"to": "ada@example.org", "body": "Dear Ada Lovelace"}
    assert calls[0].id == "call_x"


async def test_placeholders_stay_in_egress_tool_calls() -> None:
    remote = ChunkedModel("", calls=[ToolCall("send_email", {
        "to": "<EMAIL_ADDRESS_1>", "body": "Dear <PERSON_1>"}, "call_x")])
    for router in (PrivacyRouter(ScriptedModel(), remote, policy()),  # default: none restored
                   PrivacyRouter(ScriptedModel(), remote, policy(),
                                 egress=lambda name: name == "send_email")):
        _, calls, _ = await run(router, [Message("user", "email Ada Lovelace at ada@example.org")],
                                [SEND])
        assert calls[0].arguments == {"to": "<EMAIL_ADDRESS_1>", "body": "Dear <PERSON_1>"}


async def test_allow_policy_sends_as_is() -> None:
    remote = ChunkedModel("hi")
    audit = Audit()
    router = PrivacyRouter(ScriptedModel(), remote, policy(PERSON="allow", EMAIL_ADDRESS="allow"),
                           audit=audit)
    await run(router, [Message("user", "Ada Lovelace, ada@example.org")])
    assert "Ada Lovelace" in sent_text(remote.seen[0])
    assert audit.rows[0]["decision"] == "remote"


async def test_threshold_and_allow_terms() -> None:
    remote = ChunkedModel("x")
    router = PrivacyRouter(ScriptedModel(), remote, policy(threshold=0.5, allow=["alan turing"]))
    await run(router, [Message("user", "Alan Turing at 212-555-0199")])
    seen = sent_text(remote.seen[0])
    assert "Alan Turing" in seen  # allow-listed
    assert "212-555-0199" in seen  # scored 0.4 < 0.5


async def test_secret_scanner_class_is_local_only() -> None:
    local = ScriptedModel(say("kept"))
    remote = ChunkedModel("never")
    router = PrivacyRouter(local, remote, policy())
    d = router.decide([Message("user", "token ghp_hGAkWvj7FAc9QeWJKY40uvSwMFLZDe1f8rES")])
    assert d.route == "local" and d.local_only == ("SECRET",)


async def test_remote_failure_falls_back_to_local_before_anything_shown() -> None:
    local = ScriptedModel(say("local answer"))
    remote = ChunkedModel("x", fail=ModelError("cannot reach the model server"))
    audit = Audit()
    router = PrivacyRouter(local, remote, policy(), audit=audit)
    text, _, _ = await run(router, [Message("user", "hello Ada Lovelace")])
    assert text == "local answer"
    assert [r["decision"] for r in audit.rows] == ["remote_redacted", "local_fallback"]
    # the local model may see the original
    assert local.seen[0].messages[0].content == "hello Ada Lovelace"


async def test_no_fallback_when_disabled_or_output_error() -> None:
    router = PrivacyRouter(ScriptedModel(), ChunkedModel("x", fail=ModelError("down")), policy(),
                           fallback_local=False)
    with pytest.raises(ModelError):
        await run(router, [Message("user", "hi")])
    router = PrivacyRouter(ScriptedModel(), ChunkedModel("x", fail=ModelOutputError("bad")),
                           policy())
    with pytest.raises(ModelOutputError):
        await run(router, [Message("user", "hi")])


async def test_aclose_closes_both() -> None:
    local, remote = ScriptedModel(), ChunkedModel("x")
    await PrivacyRouter(local, remote, policy()).aclose()
    assert local.closed and remote.closed

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from openai import APIError, NotFoundError, OpenAI

from bastion.messages import Finish, TextDelta, ToolCall, ToolCallEvent, Usage
from bastion.security.approval import AllowApprover
from bastion.testing import Reply, call, say
from tests.unit.server.conftest import TOKEN

URL = "/v1/chat/completions"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def sse_chunks(text: str) -> list[dict | str]:
    out: list[dict | str] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models_list_and_unknown_model(make_api):
    api = make_api()
    ids = [m["id"] for m in api.client.get("/v1/models").json()["data"]]
    assert ids[0] == "bastion-agent" and "scripted" in ids
    assert api.client.get("/v1/models/bastion-agent").json()["id"] == "bastion-agent"
    resp = api.client.get("/v1/models/gpt-9")
    assert resp.status_code == 404
    resp = api.client.post(URL, json={"model": "gpt-9", "messages": [user("hi")]})
    assert resp.status_code == 404
    err = resp.json()["error"]
    assert err["code"] == "model_not_found"
    assert "bastion-agent" in err["message"] and "scripted" in err["message"]


def test_agent_runs_a_tool_through_the_gateway(make_api, bastion_home):
    api = make_api(call("list_files", path="."), say("There is 1 file."))
    (api.app.gateway.environment.workspace / "notes.txt").write_text("hello")
    resp = api.client.post(URL, json={"model": "bastion-agent", "messages": [user("count")]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "There is 1 file."}
    assert body["choices"][0]["finish_reason"] == "stop"
    step = body["bastion"]["tool_steps"][0]
    assert step["name"] == "list_files" and step["ok"] and step["decision"] == "allowed"
    assert "notes.txt" in step["text"]
    assert body["bastion"]["steps"] == 2 and body["bastion"]["session_id"] is None
    # the tool's real output went back to the model
    tool_msgs = [m for m in api.model.seen[1].messages if m.role == "tool"]
    assert "notes.txt" in tool_msgs[0].content
    assert body["usage"]["total_tokens"] == (body["usage"]["prompt_tokens"]
                                             + body["usage"]["completion_tokens"])
    events = api.app.audit.query() if hasattr(api.app.audit, "query") else None
    if events is not None:
        assert any(ev.actor == "api" and ev.tool == "list_files" for ev in events)


def test_agent_stream_shows_tool_steps_and_ends_with_done(make_api):
    api = make_api(call("list_files", path="."), say("No files here."))
    resp = api.client.post(URL, json={"model": "bastion-agent", "stream": True,
                                      "stream_options": {"include_usage": True},
                                      "messages": [user("count")]})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(resp.text)
    assert chunks[-1] == "[DONE]"
    objs = [c for c in chunks if isinstance(c, dict)]
    assert objs[0]["choices"][0]["delta"]["role"] == "assistant"
    kinds = [c.get("bastion", {}).get("type") for c in objs]
    assert kinds.index("tool_started") < kinds.index("tool_finished") < kinds.index("done")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in objs if c["choices"])
    assert text == "No files here."
    finish = [c for c in objs if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish[0]["choices"][0]["finish_reason"] == "stop"
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] > 0
    assert len({c["id"] for c in objs}) == 1


def test_prior_messages_are_context_and_system_is_appended(make_api):
    api = make_api(say("Blue."))
    resp = api.client.post(URL, json={"model": "bastion-agent", "messages": [
        {"role": "system", "content": "Answer in one word."},
        user("My favourite colour is blue."),
        {"role": "assistant", "content": "Noted."},
        user("What is my favourite colour?"),
    ]})
    assert resp.status_code == 200
    sent = api.model.seen[0].messages
    assert sent[0].role == "system" and sent[0].content.endswith("Answer in one word.")
    assert [(m.role, m.content) for m in sent[1:]] == [
        ("user", "My favourite colour is blue."), ("assistant", "Noted."),
        ("user", "What is my favourite colour?")]
    # stateless: nothing was stored in the app's memory under a public id
    assert resp.json()["bastion"]["session_id"] is None


def test_stateless_requests_are_windowed_and_never_stored(make_api):
    api = make_api(say("ok"), memory={"context_tokens": 200})
    history = []
    for i in range(20):
        history += [user(f"question {i} " + "words " * 30),
                    {"role": "assistant", "content": f"answer {i} " + "words " * 30}]
    resp = api.client.post(URL, json={"model": "bastion-agent",
                                      "messages": [*history, user("last question")]})
    assert resp.status_code == 200
    sent = api.model.seen[0].messages
    assert sent[-1].content == "last question"
    assert len(sent) < 20  # the app's memory windowed the context to its budget
    assert api.app.memory.store.sessions() == []  # nothing was stored


@pytest.mark.parametrize("how", ["header", "session_id", "user"])
def test_session_id_continues_the_conversation(make_api, how):
    api = make_api(say("Hello Ada."), say("Your name is Ada."))

    def send(text: str):
        body: dict = {"model": "bastion-agent", "messages": [user(text)]}
        headers = {}
        if how == "header":
            headers["X-Bastion-Session"] = "s-42"
        else:
            body[how] = "s-42"
        return api.client.post(URL, json=body, headers=headers)

    first = send("I am Ada.")
    assert first.json()["bastion"]["session_id"] == "s-42"
    assert first.headers["x-bastion-session"] == "s-42"
    send("What is my name?")
    second_context = [(m.role, m.content) for m in api.model.seen[1].messages[1:]]
    assert second_context == [("user", "I am Ada."), ("assistant", "Hello Ada."),
                              ("user", "What is my name?")]
    stored = api.client.get("/v1/sessions/s-42").json()["messages"]
    assert [m["content"] for m in stored][-1] == "Your name is Ada."


def test_any_user_string_maps_to_a_stable_session(make_api):
    api = make_api(say("one"), say("two"))
    for _ in range(2):
        body = api.client.post(URL, json={"model": "bastion-agent", "user": "Ada Lovelace <a@b>",
                                          "messages": [user("hi")]}).json()
        sid = body["bastion"]["session_id"]
        assert sid.startswith("user-")
    assert len(api.model.seen[1].messages) == 4  # system, hi, one, hi: the same session


def test_bad_requests_for_the_agent(make_api):
    api = make_api()
    resp = api.client.post(URL, json={"model": "bastion-agent", "messages": [
        user("hi"), {"role": "assistant", "content": "hello"}]})
    assert resp.status_code == 400 and "last message" in resp.json()["error"]["message"]
    resp = api.client.post(URL, json={"model": "bastion-agent", "messages": [user("hi")]},
                           headers={"X-Bastion-Session": "../../etc"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_session_id"
    resp = api.client.post(URL, json={"model": "bastion-agent", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert resp.status_code == 400 and "image_url" in resp.json()["error"]["message"]
    assert api.model.seen == []


def test_busy_session_is_refused(make_api):
    api = make_api(say("x"))
    assert api.client.app.state.busy_sessions.claim("s-busy")
    resp = api.client.post(URL, json={"model": "bastion-agent", "session_id": "s-busy",
                                      "messages": [user("hi")]})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "session_busy"
    api.client.app.state.busy_sessions.release("s-busy")
    assert api.client.post(URL, json={"model": "bastion-agent", "session_id": "s-busy",
                                      "messages": [user("hi")]}).status_code == 200


def test_agent_failure_is_a_clear_error(make_api):
    api = make_api(Reply(fail=True), Reply(fail=True), Reply(fail=True), Reply(fail=True))
    resp = api.client.post(URL, json={"model": "bastion-agent", "messages": [user("x")]})
    assert resp.status_code == 502
    assert "invalid tool JSON" in resp.json()["error"]["message"]
    resp = api.client.post(URL, json={"model": "bastion-agent", "stream": True,
                                      "messages": [user("x")]})
    chunks = sse_chunks(resp.text)
    assert chunks[-1] == "[DONE]"
    assert "invalid tool JSON" in chunks[-2]["error"]["message"]


def test_risky_tools_are_denied_by_default_and_set_approver_allows(make_api):
    # write_file needs approval; no one answers the API's approval queue in time -> denied
    api = make_api(call("write_file", path="a.txt", content="x"), say("Could not."),
                   call("write_file", path="a.txt", content="x"), say("Done."),
                   security={"tools": {"write_file": "ask"}, "approval_timeout_s": 0.2})
    ws = api.app.gateway.environment.workspace
    body = api.client.post(URL, json={"model": "bastion-agent",
                                      "messages": [user("write")]}).json()
    step = body["bastion"]["tool_steps"][0]
    assert step["decision"] == "denied" and "not approved" in step["error"]
    assert not (ws / "a.txt").exists()
    # the stream shows that the agent waited for an approval
    api.model.replies[:0] = [call("write_file", path="a.txt", content="x"), say("No.")]
    resp = api.client.post(URL, json={"model": "bastion-agent", "stream": True,
                                      "messages": [user("write")]})
    kinds = [c.get("bastion", {}).get("type") for c in sse_chunks(resp.text)
             if isinstance(c, dict)]
    assert kinds.index("tool_started") < kinds.index("approval_pending")
    assert kinds.index("approval_pending") < kinds.index("tool_finished")
    api.app.set_approver(AllowApprover())
    body = api.client.post(URL, json={"model": "bastion-agent",
                                      "messages": [user("write")]}).json()
    assert body["bastion"]["tool_steps"][0]["decision"] == "allowed"
    assert (ws / "a.txt").read_text() == "x"


# -- pass-through -----------------------------------------------------------------------------


WEATHER = {"type": "function", "function": {
    "name": "weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def test_passthrough_plain_text(make_api):
    api = make_api(say("Paris is in France."))
    resp = api.client.post(URL, json={"model": "scripted", "temperature": 0.5, "max_tokens": 7,
                                      "stop": "END", "messages": [user("Where is Paris?")]})
    body = resp.json()
    assert body["choices"][0]["message"]["content"] == "Paris is in France."
    assert "bastion" not in body
    seen = api.model.seen[0]
    assert seen.tools == []  # no agent tools on pass-through
    assert [m.role for m in seen.messages] == ["user"]
    assert (seen.settings.temperature, seen.settings.max_tokens, seen.settings.stop) == (
        0.5, 7, ["END"])


def test_passthrough_messages_pass_the_secret_guard(make_api):
    api = make_api(say("ok"))
    api.client.post(URL, json={"model": "scripted",
                               "messages": [user(f"my token is {TOKEN}, keep it")]})
    sent = api.model.seen[0].messages[0].content
    assert TOKEN not in sent and "[REDACTED]" in sent


def test_passthrough_returns_the_requests_tool_calls(make_api):
    api = make_api(call("weather", city="Oslo"), call("weather", city="Oslo"))
    resp = api.client.post(URL, json={"model": "scripted", "tools": [WEATHER],
                                      "tool_choice": {"type": "function",
                                                      "function": {"name": "weather"}},
                                      "messages": [user("Weather in Oslo?")]})
    msg = resp.json()["choices"][0]
    assert msg["finish_reason"] == "tool_calls"
    tc = msg["message"]["tool_calls"][0]
    assert tc["function"]["name"] == "weather"
    assert json.loads(tc["function"]["arguments"]) == {"city": "Oslo"}
    assert msg["message"]["content"] is None
    assert api.model.seen[0].tools[0].name == "weather"
    assert api.model.seen[0].settings.tool_choice == "weather"
    # stream: tool_calls deltas with an index
    resp = api.client.post(URL, json={"model": "scripted", "tools": [WEATHER], "stream": True,
                                      "messages": [user("Weather in Oslo?")]})
    objs = [c for c in sse_chunks(resp.text) if isinstance(c, dict)]
    deltas = [c["choices"][0]["delta"] for c in objs]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["index"] == 0 and calls[0]["function"]["name"] == "weather"
    assert objs[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_passthrough_history_with_tool_results(make_api):
    api = make_api(say("It is sunny in Oslo."))
    resp = api.client.post(URL, json={"model": "scripted", "tools": [WEATHER], "messages": [
        user("Weather in Oslo?"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]})
    assert resp.status_code == 200
    sent = api.model.seen[0].messages
    assert sent[1].tool_calls[0].arguments == {"city": "Oslo"} and sent[1].tool_calls[0].id == "c1"
    assert sent[2].role == "tool" and sent[2].tool_call_id == "c1"


def test_passthrough_bad_tool_requests(make_api):
    api = make_api()
    resp = api.client.post(URL, json={"model": "scripted", "tools": [WEATHER],
                                      "tool_choice": {"type": "function",
                                                      "function": {"name": "nope"}},
                                      "messages": [user("x")]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "tool_choice"
    resp = api.client.post(URL, json={"model": "scripted", "messages": [
        {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "w", "arguments": "{oops"}}]},
        user("x")]})
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]["message"]
    resp = api.client.post(URL, json={"model": "scripted", "messages": [user("x")],
                                      "response_format": {"type": "json_object"}})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "response_format"
    resp = api.client.post(URL, json={"model": "scripted", "messages": [
        {"role": "tool", "content": "x"}]})
    assert resp.status_code == 400 and "tool_call_id" in resp.json()["error"]["message"]


# -- secrets never leave --------------------------------------------------------------------


class SplitSecretModel:
    """Streams the API token split over two deltas, and a provider key in a tool call."""

    name = "leaky"

    def __init__(self) -> None:
        self.closed = False

    async def chat(self, messages, tools=(), *, settings=None) -> AsyncIterator:
        yield TextDelta("the token is " + TOKEN[:5])
        yield TextDelta(TOKEN[5:] + " and a key sk-hGAkWvj7FAc9QeWJKY40uvSw")
        yield TextDelta(" ok")
        if any(t.name == "weather" for t in tools):
            yield ToolCallEvent(ToolCall("weather", {"city": "Oslo", "api_key": "hunter22"}))
        yield Usage(1, 1)
        yield Finish("stop")

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["leaky", "bastion-agent"])
def test_secrets_are_redacted_from_responses(make_api, stream, model):
    api = make_api()
    api.app.model = SplitSecretModel()
    body = {"model": model, "stream": stream, "messages": [user("leak")]}
    if model == "leaky":
        body["tools"] = [WEATHER]
    resp = api.client.post(URL, json=body)
    assert resp.status_code == 200
    assert TOKEN not in resp.text
    assert "sk-hGAkWvj7FAc9QeWJKY40uvSw" not in resp.text
    assert "hunter22" not in resp.text
    if stream:
        objs = [c for c in sse_chunks(resp.text) if isinstance(c, dict) and c["choices"]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in objs)
    else:
        text = resp.json()["choices"][0]["message"]["content"] or ""
    assert text == "the token is [REDACTED] and a key [REDACTED] ok"


# -- the official openai client, in process ---------------------------------------------------


def test_openai_client_reads_our_stream_and_extras(make_api):
    api = make_api(call("list_files", path="."), say("Nothing here."), say("Hi!"))
    client = OpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=api.client)
    stream = client.chat.completions.create(
        model="bastion-agent", messages=[{"role": "user", "content": "list"}], stream=True)
    text, tools = "", []
    for chunk in stream:
        extra = (chunk.model_extra or {}).get("bastion")
        if extra and extra["type"].startswith("tool_"):
            tools.append((extra["type"], extra["name"]))
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text == "Nothing here."
    assert tools == [("tool_started", "list_files"), ("tool_finished", "list_files")]
    done = client.chat.completions.create(model="scripted",
                                          messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == "Hi!"
    with pytest.raises(NotFoundError, match="unknown model"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    api.model.replies = [Reply(fail=True), Reply(fail=True)]
    with pytest.raises(APIError, match="invalid tool JSON"):
        for _ in client.chat.completions.create(
                model="bastion-agent", messages=[{"role": "user", "content": "x"}],
                stream=True):
            pass

from __future__ import annotations

import asyncio
import json

from bastion.security.redact import Redactor
from bastion.server.sse import StreamRedactor
from bastion.testing import Reply, call, say
from tests.unit.server.conftest import TOKEN


def named_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        head, data = block.split("\n", 1)
        assert head.startswith("event: ") and data.startswith("data: "), block
        out.append((head[len("event: "):], json.loads(data[len("data: "):])))
    return out


def test_create_read_and_conflict(make_api):
    api = make_api()
    resp = api.client.post("/v1/sessions")
    assert resp.status_code == 201
    sid = resp.json()["id"]
    assert api.client.get(f"/v1/sessions/{sid}").json() == {
        "id": sid, "object": "session", "busy": False, "total": 0, "offset": 0, "messages": []}
    assert api.client.post("/v1/sessions", json={"id": "mine"}).json()["id"] == "mine"
    resp = api.client.post("/v1/sessions", json={"id": "mine"})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "session_exists"
    resp = api.client.get("/v1/sessions/never-used")
    assert resp.status_code == 404 and "POST /v1/sessions" in resp.json()["error"]["message"]
    resp = api.client.post("/v1/sessions", json={"id": "bad id!"})
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "id"


def test_message_stream_has_named_agent_events(make_api):
    api = make_api(call("list_files", path="."), say("Nothing here."))
    sid = api.client.post("/v1/sessions").json()["id"]
    resp = api.client.post(f"/v1/sessions/{sid}/messages", json={"content": "list files"})
    assert resp.status_code == 200 and resp.headers["x-bastion-session"] == sid
    events = named_events(resp.text)
    names = [n for n, _ in events]
    assert names[0] == "session" and names[-1] == "done"
    assert names.index("tool_started") < names.index("tool_finished")
    started = dict(events)["tool_started"]
    assert started["name"] == "list_files" and started["arguments"] == {"path": "."}
    assert started["risk"] == "low" and started["sandbox"] == "in-process"  # shown by the web UI
    assert "".join(p["text"] for n, p in events if n == "text") == "Nothing here."
    assert dict(events)["done"]["answer"] == "Nothing here."
    messages = api.client.get(f"/v1/sessions/{sid}").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"][0]["name"] == "list_files"
    assert messages[2]["name"] == "list_files"
    step = messages[2]["step"]  # the step as the stream showed it, for the transcript (#20)
    assert {k: step[k] for k in ("risk", "sandbox", "ok", "decision")} == {
        "risk": "low", "sandbox": "in-process", "ok": True, "decision": "allowed"}
    assert step["duration_ms"] == dict(events)["tool_finished"]["duration_ms"]
    assert step.get("approval") is None and messages[1].get("step") is None


def test_message_json_and_multi_turn(make_api):
    api = make_api(say("Hi Ada."), say("You are Ada."))
    url = "/v1/sessions/t1/messages"  # sessions are created on first use
    first = api.client.post(url, json={"content": "I am Ada.", "stream": False}).json()
    assert first["answer"] == "Hi Ada." and first["session_id"] == "t1"
    second = api.client.post(url, json={"content": "Who am I?", "stream": False,
                                        "temperature": 0.3, "max_tokens": 9}).json()
    assert second["answer"] == "You are Ada."
    seen = api.model.seen[1]
    assert [m.content for m in seen.messages[1:]] == ["I am Ada.", "Hi Ada.", "Who am I?"]
    assert (seen.settings.temperature, seen.settings.max_tokens) == (0.3, 9)


def test_message_errors(make_api):
    api = make_api(Reply(fail=True), Reply(fail=True))
    resp = api.client.post("/v1/sessions/t2/messages", json={"content": ""})
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "content"
    resp = api.client.post("/v1/sessions/t2/messages", json={"content": "x", "extra": 1})
    assert resp.status_code == 422 and "extra" in resp.json()["error"]["message"]
    events = named_events(api.client.post("/v1/sessions/t2/messages",
                                          json={"content": "x"}).text)
    assert events[-1][0] == "error" and "invalid tool JSON" in events[-1][1]["message"]
    assert "t2" not in api.client.app.state.busy_sessions  # released after the error
    api.client.app.state.busy_sessions.claim("t2")
    resp = api.client.post("/v1/sessions/t2/messages", json={"content": "x"})
    assert resp.status_code == 409
    assert api.client.get("/v1/sessions/t2").json()["busy"] is True


def test_session_contents_are_redacted(make_api):
    api = make_api(say(f"the token is {TOKEN}"))
    api.client.post("/v1/sessions/t3/messages", json={"content": "x", "stream": False})
    resp = api.client.get("/v1/sessions/t3")
    assert TOKEN not in resp.text and "[REDACTED]" in resp.text


def _stream(red: StreamRedactor, pieces: list[str]) -> tuple[str, list[str]]:
    out = [red.feed(p) for p in pieces]
    out.append(red.flush())
    return "".join(out), out


def test_stream_redactor_catches_secrets_split_across_deltas():
    red = StreamRedactor(Redactor(["s3cr3t-value"]))
    text, _ = _stream(red, ["my s3cr", "3t-val", "ue is ", "here: Bear", "er hGAkWvj7FA",
                            "c9QeWJKY40uvSw ", "done"])
    assert "s3cr3t" not in text and "hGAkWvj7FAc9QeWJ" not in text
    assert text.startswith("my [REDACTED] is here: ") and text.endswith("[REDACTED] done")


def test_stream_redactor_sees_the_words_before_a_secret():
    red = StreamRedactor(Redactor())
    words = ["The", "settings", "are", "as", "follows", "and", "the", "password:", ""]
    pieces = [w + " " for w in words] + ["hunt", "er2hunter2", " and that is all ", "folks"]
    text, _ = _stream(red, pieces)
    assert "hunter2hunter2" not in text and "[REDACTED]" in text


def test_stream_redactor_keeps_streaming_plain_text():
    red = StreamRedactor(Redactor())
    pieces = [f"word{i} " for i in range(60)]
    text, out = _stream(red, pieces)
    assert text == "".join(pieces)
    assert sum(1 for piece in out[:-1] if piece) > 20  # released as it arrives, not at the end
    emoji = StreamRedactor(Redactor())
    text, out = _stream(emoji, ["\U0001f31f"] * 80)
    assert text == "\U0001f31f" * 80 and any(out[:-1])


def test_stream_redactor_holds_pem_blocks_and_bounds_what_it_holds():
    red = StreamRedactor(Redactor())
    pem = ("-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4"
           "WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----")
    text, _ = _stream(red, ["key: "] + [pem[i:i + 7] for i in range(0, len(pem), 7)] + [" end"])
    assert "MIIB" not in text and text.endswith(" end")
    small = StreamRedactor(Redactor(), hold=4, limit=16)
    assert small.feed("x" * 20) == "x" * 20


def test_read_returns_whole_transcript_paged_beyond_the_context_window(make_api):
    # history_limit bounds what the model sees; the API still shows every stored message
    api = make_api(*[say(f"answer {i}") for i in range(6)], memory={"history_limit": 10})
    for i in range(6):
        api.client.post("/v1/sessions/long/messages", json={"content": f"q{i}", "stream": False})
    assert len(asyncio.run(api.app.memory.history("long"))) == 10  # the window is shorter
    body = api.client.get("/v1/sessions/long").json()
    assert body["total"] == 12 and len(body["messages"]) == 12
    assert body["messages"][0]["content"] == "q0" and body["messages"][-1]["content"] == "answer 5"
    page = api.client.get("/v1/sessions/long", params={"offset": 10, "limit": 5}).json()
    assert page["total"] == 12 and [m["content"] for m in page["messages"]] == ["q5", "answer 5"]
    resp = api.client.get("/v1/sessions/long", params={"limit": 0})
    assert resp.status_code == 422

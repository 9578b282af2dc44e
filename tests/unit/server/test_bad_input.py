"""Bad input on every core and session route: a JSON error with one line, never a 500."""

from __future__ import annotations

import pytest

from bastion.testing import say

BODIES: list[bytes] = [
    b"",
    b"[]",
    b'"text"',
    b"null",
    b"\xff\xfe not utf-8",
    b'{"model": 5, "messages": "no"}',
    b'{"model": "bastion-agent", "messages": null}',
    b'{"model": "bastion-agent", "messages": []}',
    b'{"model": "bastion-agent", "messages": [{}]}',
    b'{"model": "bastion-agent", "messages": [{"role": "user", "content": {"a": 1}}]}',
    b'{"model": "scripted", "messages": [{"role": "user", "content": "x"}], "n": 3}',
    b'{"model": "scripted", "messages": [{"role": "user", "content": "x"}],'
    b' "max_tokens": 99999999999999999999999}',
    b'{"model": "scripted", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}',
    b'{"model": "scripted", "messages": [{"role": "user", "content": "x"}],'
    b' "tool_choice": "sometimes"}',
    b'{"model": "scripted", "messages": [{"role": "user", "content": "x"}], "stop": 7}',
    b'{"content": 123}',
    b'{"content": "x", "stream": "maybe"}',
    b'{"id": "' + b"a" * 300 + b'"}',
    b'{"id": 7}',
]

ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/sessions"),
    ("POST", "/v1/sessions/s1/messages"),
]


def _assert_json_error(resp) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        err = resp.json()["error"]
        assert err["message"] and "\n" not in err["message"]
        assert "Traceback" not in resp.text


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_garbage_bodies(make_api, method, path):
    api = make_api(*[say("fine") for _ in range(len(BODIES))])
    for body in BODIES:
        resp = api.client.request(method, path, content=body,
                                  headers={"Content-Type": "application/json"})
        _assert_json_error(resp)


@pytest.mark.parametrize("sid", ["..", "a" * 200, "a b", "%00", "-leading", "x/y"])
def test_odd_session_ids(make_api, sid):
    api = make_api(say("fine"))
    for method, path, body in [
        ("GET", f"/v1/sessions/{sid}", None),
        ("POST", f"/v1/sessions/{sid}/messages", {"content": "hi", "stream": False}),
    ]:
        resp = api.client.request(method, path, json=body)
        _assert_json_error(resp)
        assert resp.status_code in (404, 405, 422), (sid, resp.status_code, resp.text)
    assert api.model.seen == []

"""``bastion.client.refusal``: a server's error answer becomes one line with its fix."""

from __future__ import annotations

import httpx

from bastion.client import ServerRefused, refusal
from bastion.errors import AuthError, NotFoundError


def test_server_errors_become_one_line_bastion_errors() -> None:
    body = {"error": {"message": "no node a (fix: list them with bastion cluster status)",
                      "code": "node_not_found", "fix": "list them with bastion cluster status"}}
    err = refusal(httpx.Response(404, json=body))
    assert isinstance(err, ServerRefused) and isinstance(err, NotFoundError)
    assert (err.message, err.fix, err.status, err.code) == (
        "no node a", "list them with bastion cluster status", 404, "node_not_found")
    other = refusal(httpx.Response(502, text="bad gateway"))
    assert (other.message, other.fix, other.status, other.code) == (
        "bad gateway", None, 502, None)
    assert isinstance(refusal(httpx.Response(401, json={"error": {"message": "x"}})), AuthError)
    odd = refusal(httpx.Response(500, json=["not", "an", "error"]))
    assert odd.status == 500 and odd.code is None and odd.message.startswith("[")


def test_an_answer_that_is_not_the_documented_model_is_one_line() -> None:
    from bastion.client import BastionClient
    from bastion.server.responses import Health

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok", "version": "1.0", "extra": 1})
        return httpx.Response(200, json={"status": "ok"})  # a browser_sessions without fields

    with BastionClient("http://x", transport=httpx.MockTransport(answer)) as api:
        health = api.health()
        assert isinstance(health, Health) and health.version == "1.0"  # extra fields are kept
        try:
            api.browser_sessions()
        except ServerRefused as exc:
            assert "not a BrowserSessions" in exc.message and "\n" not in exc.message
            assert exc.fix is not None
        else:
            raise AssertionError("a body without the model's fields was accepted")

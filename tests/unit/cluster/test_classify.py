"""Failover decisions switch on error types, never on message text (issue 15 item 3).

The errors come from the real :class:`HttpModel` over httpx's transport seam, so a change in
how ``llm/http.py`` maps a failure shows up here as a changed failover kind.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from bastion.cluster._errors import classify_failure
from bastion.errors import ModelError
from bastion.llm.http import PROFILES, HttpModel
from bastion.messages import ChatSettings, Message


async def failure_of(handler: Callable[[httpx.Request], httpx.Response]) -> BaseException:
    model = HttpModel("m", quirks=PROFILES["llamacpp"], base_url="http://127.0.0.1:9",
                      transport=httpx.MockTransport(handler))
    with pytest.raises(ModelError) as info:
        async for _ in model.chat([Message("user", "hi")], [], settings=ChatSettings()):
            pass
    await model.aclose()
    return info.value


def refuse(r: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=r)


def cut(r: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("peer closed connection", request=r)


def stall(r: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("slow", request=r)


def status(code: int) -> Callable[[httpx.Request], httpx.Response]:
    return lambda r: httpx.Response(code, json={"error": {"message": "nope"}})


@pytest.mark.parametrize(("handler", "kind", "reason"), [
    (refuse, "hard", "unreachable: connection refused"),
    (cut, "hard", "connection lost: peer closed connection"),
    (stall, "soft", "timed out"),
    (status(503), "soft", "HTTP 503"),
    (status(429), "soft", "HTTP 429"),
    (status(401), "client", "HTTP 401: model server"),
    (status(404), "client", "HTTP 404: model server"),
])
async def test_http_model_failures_classify_by_type(
        handler: Callable[[httpx.Request], httpx.Response], kind: str, reason: str) -> None:
    failed = classify_failure(await failure_of(handler))
    assert failed.kind == kind and failed.reason.startswith(reason)


@pytest.mark.parametrize("text", [
    "model server x answered 404: gone",        # the old regex read this as a client error
    "connection refused by the server's tool",  # the old word list read this as unreachable
])
def test_message_text_does_not_steer_failover(text: str) -> None:
    failed = classify_failure(ModelError(text))
    assert failed.kind == "soft" and failed.reason.startswith("ModelError: ")

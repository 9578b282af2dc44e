"""A tiny OpenAI-compatible chat server on loopback, scripted by the conversation it is sent.

Used to drive ``bastion`` sub-processes (``model.backend: openai`` + ``model.base_url``)
without a real model. It streams SSE like llama.cpp's server and understands native tool
calls (the client is configured with ``model.native_tools: true``):

- last message is a tool result -> "The tool said: <first line of the result>"
- user text contains "count files" -> a ``list_files`` call with ``{"path": "sample"}``
- user text contains "write note" -> a ``write_file`` call writing "hi" to note.txt
- user text starts with "run shell: CMD" -> a ``shell`` call running CMD
- user text starts with "empty file: PATH" -> a ``write_file`` call writing "" to PATH
- user text contains "slow" -> "tick" every 0.2 s for 60 s (to be cancelled)
- anything else -> "echo: <user text>"
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


class ScriptedHandler(BaseHTTPRequestHandler):
    """Override ``_script`` in a subclass to script other answers."""

    server: FakeOpenAIServer  # type: ignore[assignment]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json({"object": "list", "data": [{"id": "fake", "object": "model"}]})
        else:
            self._json({"error": "not found"}, 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        self.server.requests.append(body)
        self.server.headers.append({k.lower(): v for k, v in self.headers.items()})
        if not body.get("stream"):
            self._json({"error": {"message": "this fake only streams"}}, 400)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for piece in self._script(body):
                self.wfile.write(piece)
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnects += 1  # the client cancelled the turn

    def _script(self, body: dict[str, Any]) -> Iterator[bytes]:
        messages = body["messages"]
        last = messages[-1]
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if last["role"] == "tool":
            first = (last.get("content") or "").splitlines()[0] if last.get("content") else ""
            yield from self._words(f"The tool said: {first}")
        elif "count files" in user and body.get("tools"):
            call = {"index": 0, "id": "call_fake1", "type": "function",
                    "function": {"name": "list_files", "arguments": json.dumps({"path": "sample"})}}
            yield _chunk({"role": "assistant", "tool_calls": [call]})
            yield _chunk({}, "tool_calls")
        elif "write note" in user and body.get("tools"):
            args = json.dumps({"path": "note.txt", "content": "hi"})
            call = {"index": 0, "id": "call_fake2", "type": "function",
                    "function": {"name": "write_file", "arguments": args}}
            yield _chunk({"role": "assistant", "tool_calls": [call]})
            yield _chunk({}, "tool_calls")
        elif user.startswith(("run shell: ", "empty file: ")) and body.get("tools"):
            head, _, rest = user.partition(": ")
            name, args = (("shell", {"command": rest}) if head == "run shell"
                          else ("write_file", {"path": rest, "content": ""}))
            call = {"index": 0, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)}}
            yield _chunk({"role": "assistant", "tool_calls": [call]})
            yield _chunk({}, "tool_calls")
        elif "slow" in user:
            for _ in range(300):
                yield _chunk({"content": "tick "})
                time.sleep(0.2)
            yield _chunk({}, "stop")
        else:
            yield from self._words(f"echo: {user}")

    def _words(self, text: str) -> Iterator[bytes]:
        for i, word in enumerate(text.split(" ")):
            yield _chunk({"content": word if i == 0 else " " + word})
        yield _chunk({}, "stop")

    def _json(self, data: Any, code: int = 200) -> None:
        raw = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class FakeOpenAIServer(ThreadingHTTPServer):
    """Serve on 127.0.0.1 (a free port) in a daemon thread; ``base_url`` ends in /v1."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), handler or ScriptedHandler)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each POST's headers (lower-case names)
        self.disconnects = 0
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The URL to put in ``model.base_url``."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

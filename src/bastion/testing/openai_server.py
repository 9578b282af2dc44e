"""A tiny, fast OpenAI-compatible chat server (asyncio, HTTP/1.1 keep-alive, SSE).

For tests and benchmarks of anything that talks to a model server (the HTTP backend, the
cluster router, a plugin) where a real model would be too slow or where misbehaviour is the
point. In-process::

    fake = FakeOpenAIServer(tokens=5)
    server = await serve(fake, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]   # model.base_url: http://127.0.0.1:PORT/v1

or as a process:

    python -m bastion.testing.openai_server --port 8101 [--mode ok|error500|slow] [--tokens 20]

Modes: ``ok`` streams ``--tokens`` words (``--token-delay`` apart); ``error500`` answers 500
to chat requests (but lists models fine, like a server whose engine broke); ``slow`` waits
``--slow-s`` before answering chat requests.

``--script FILE`` (or ``script=[...]``) makes answers deterministic tool calls: a JSON list of
rules ``{"when": TEXT, "tool": NAME, "arguments": {...}, "then": TEXT}`` or ``{"when": TEXT,
"text": TEXT}``. The first rule whose ``when`` is in the last user message answers it: a tool
call (native, ``finish_reason: tool_calls``) or the text; once the tool's result is the last
message, the answer is ``then`` with ``{result}`` replaced by that result. ``text``/``then``
stream word by word like ``ok``; no rule matching: the ``ok`` words.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import Any

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]


class FakeOpenAIServer:
    """Serves /v1/models and /v1/chat/completions; counts chat requests."""

    def __init__(
        self,
        *,
        name: str = "fake",
        mode: str = "ok",
        tokens: int = 20,
        token_delay: float = 0.0,
        slow_s: float = 30.0,
        script: list[dict[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.mode = mode
        self.tokens = tokens
        self.token_delay = token_delay
        self.slow_s = slow_s
        self.script = list(script or [])
        self.call_count = 0
        self.chat_requests = 0

    def answer_words(self, n: int) -> list[str]:
        """Return the ``n`` words of an answer."""
        return [WORDS[i % len(WORDS)] for i in range(n)]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection (keep-alive: requests until the client closes)."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                await self.route(method, path, body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def scripted(self, messages: list[dict[str, Any]]) -> dict[str, Any] | str | None:
        """Return the scripted answer: a tool call (dict), a text (str), or None (no rule)."""
        said = _last_user(messages)
        rule = next((r for r in self.script if str(r.get("when", "")) in said), None)
        if rule is None:
            return None
        last = messages[-1] if messages else {}
        if last.get("role") == "tool" or "tool" not in rule:
            if "tool" not in rule:
                return str(rule.get("text", ""))
            result = last.get("content")
            result = result if isinstance(result, str) else json.dumps(result)
            return str(rule.get("then", "{result}")).replace("{result}", result)
        self.call_count += 1
        return {"id": f"call_script_{self.call_count}", "type": "function",
                "function": {"name": rule["tool"],
                             "arguments": json.dumps(rule.get("arguments", {}))}}

    async def send_tool_call(self, writer: asyncio.StreamWriter, call: dict[str, Any],
                             stream: bool, created: int) -> None:
        """Answer with one native tool call (a JSON body, or one SSE chunk and [DONE])."""
        if not stream:
            await self.send(writer, 200, {
                "id": "x", "object": "chat.completion", "created": created, "model": "fake-model",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": None, "tool_calls": [call]}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}})
            return
        chunks = [
            {"index": 0, "delta": {"role": "assistant", "tool_calls": [{**call, "index": 0}]},
             "finish_reason": None},
            {"index": 0, "delta": {}, "finish_reason": "tool_calls"},
        ]
        head = {"id": "x", "object": "chat.completion.chunk", "created": created,
                "model": "fake-model"}
        data = b"".join(b"data: " + json.dumps({**head, "choices": [c]}).encode() + b"\n\n"
                        for c in chunks) + b"data: [DONE]\n\n"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     + f"content-length: {len(data)}\r\n\r\n".encode() + data)
        await writer.drain()

    async def send(self, writer: asyncio.StreamWriter, status: int,
                   payload: dict[str, Any]) -> None:
        """Write one JSON response."""
        data = json.dumps(payload).encode()
        reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def route(
        self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one request."""
        if method == "GET" and path.rstrip("/") in ("/v1/models", "/health"):
            await self.send(writer, 200, {"object": "list", "data": [{"id": "fake-model"}]})
            return
        if method != "POST" or path != "/v1/chat/completions":
            await self.send(writer, 404, {"error": {"message": "not found"}})
            return
        self.chat_requests += 1
        if self.mode == "error500":
            await self.send(writer, 500, {"error": {"message": "engine crashed"}})
            return
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
        req = json.loads(body or b"{}")
        n = min(self.tokens, int(req.get("max_tokens") or self.tokens))
        words = self.answer_words(n)
        created = int(time.time())
        scripted = self.scripted(req.get("messages") or [])
        if isinstance(scripted, dict):
            await self.send_tool_call(writer, scripted, bool(req.get("stream")), created)
            return
        if scripted is not None:
            words = scripted.split(" ")
        if not req.get("stream"):
            text = " ".join(words)
            await self.send(
                writer,
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": created,
                    "model": "fake-model",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n},
                },
            )
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )

        def chunk(obj: dict[str, Any] | str) -> bytes:
            data = ("data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n").encode()
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        for i, w in enumerate(words):
            delta = {"content": w if i == 0 else " " + w}
            writer.write(
                chunk(
                    {
                        "id": "x",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": "fake-model",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    }
                )
            )
            await writer.drain()
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
        writer.write(
            chunk(
                {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": "fake-model",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
            )
        )
        writer.write(chunk("[DONE]") + b"0\r\n\r\n")
        await writer.drain()


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


async def serve(server: FakeOpenAIServer, host: str, port: int) -> asyncio.Server:
    """Start listening (``port`` 0: any free port); return the asyncio server."""
    return await asyncio.start_server(server.handle, host, port, backlog=1024)


def main() -> None:
    """Run the server as a process until SIGTERM; prints ``ready`` once listening."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", default="ok", choices=["ok", "error500", "slow"])
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--token-delay", type=float, default=0.0)
    ap.add_argument("--slow-s", type=float, default=30.0)
    ap.add_argument("--script", default=None, help="JSON file of scripted answers")
    args = ap.parse_args()
    script = None
    if args.script:
        with open(args.script, encoding="utf-8") as f:
            script = json.load(f)
    fake = FakeOpenAIServer(
        mode=args.mode, tokens=args.tokens, token_delay=args.token_delay, slow_s=args.slow_s,
        script=script,
    )

    async def run() -> None:
        srv = await serve(fake, args.host, args.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        async with srv:
            await stop.wait()

    asyncio.run(run())


#: The name the tests used first.
FakeServer = FakeOpenAIServer

if __name__ == "__main__":
    main()

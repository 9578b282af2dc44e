"""Server-sent events: framing, the streaming response, and redaction of streamed text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from bastion.security.redact import Redactor

DONE = "data: [DONE]\n\n"
MEDIA_TYPE = "text/event-stream"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_data(obj: Any) -> str:
    """Return one unnamed SSE message (``data: {...}``), as OpenAI streams use."""
    return f"data: {_dumps(obj)}\n\n"


def sse_event(name: str, obj: Any) -> str:
    """Return one named SSE message (``event: NAME`` + ``data: {...}``)."""
    return f"event: {name}\ndata: {_dumps(obj)}\n\n"


def sse_response(
    body: AsyncIterator[str], *, headers: dict[str, str] | None = None
) -> StreamingResponse:
    """Return a streaming response for already-framed SSE messages (no caching, no buffering)."""
    base = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type=MEDIA_TYPE, headers={**base, **(headers or {})})


class StreamRedactor:
    """Redacts secrets from text that arrives in pieces.

    A secret can be split across two deltas, so text is held back until a whitespace
    boundary (secrets are whitespace-free tokens) and redacted in whole words. A PEM
    block is held until its END line. ``limit`` bounds how much is ever held back.
    """

    def __init__(self, redactor: Redactor, *, limit: int = 8192) -> None:
        self._redactor = redactor
        self._pending = ""
        self._limit = limit

    def feed(self, text: str) -> str:
        """Add a delta; return the text that is now safe to send (may be empty)."""
        self._pending += text
        pending = self._pending
        if len(pending) < self._limit:
            begin = pending.rfind("-----BEGIN ")
            if begin != -1 and "-----END " not in pending[begin:]:
                cut = begin
            else:
                cut = max(pending.rfind(c) for c in " \n\t\r") + 1
                # "Bearer <token>": keep the scheme word with the token that follows it.
                head = pending[:cut].rstrip()
                if head.lower().endswith("bearer"):
                    cut = len(head) - len("bearer")
        else:
            cut = len(pending)
        if cut <= 0:
            return ""
        out, self._pending = pending[:cut], pending[cut:]
        return self._redactor.text(out)

    def flush(self) -> str:
        """Return whatever is still held back, redacted."""
        out, self._pending = self._pending, ""
        return self._redactor.text(out) if out else ""

"""Server-sent events: framing, the streaming response, and redaction of streamed text."""

from __future__ import annotations

import json
import string
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from bastion.security.redact import MASK, Redactor

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


# Characters that can be part of a secret token; any other character ends a token.
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-_.+/=~:@%")


class StreamRedactor:
    """Redacts secrets from text that arrives in pieces.

    A secret can be split across deltas, and some are only recognisable with the words
    before them (``password: ...``). So the last ``hold`` characters are held back, text is
    released only up to a character that cannot be inside a token, the scan runs over the
    released text together with ``lookback`` characters of what came before, and a cut never
    falls inside a finding. A PEM block is held until its END line; ``limit`` bounds how
    much is ever held.
    """

    def __init__(
        self, redactor: Redactor, *, hold: int = 48, lookback: int = 256, limit: int = 8192
    ) -> None:
        self._scanner = redactor.scanner
        self._text = ""  # some already-released context, then the pending text
        self._sent = 0  # _text[:_sent] has been released
        self._hold = hold
        self._lookback = lookback
        self._limit = limit

    def feed(self, text: str) -> str:
        """Add a delta; return the text that is now safe to send (may be empty)."""
        self._text += text
        return self._release(self._safe_cut())

    def flush(self) -> str:
        """Return whatever is still held back, redacted."""
        return self._release(len(self._text))

    def _safe_cut(self) -> int:
        t, sent = self._text, self._sent
        if len(t) - sent > self._limit:
            return len(t)
        i = len(t) - self._hold - 1
        while i >= sent and t[i] in _TOKEN_CHARS:
            i -= 1
        cut = i + 1
        begin = t.rfind("-----BEGIN ", 0, cut)
        if begin != -1 and "-----END " not in t[begin:]:
            cut = min(cut, begin)
        return cut

    def _release(self, cut: int) -> str:
        t, sent = self._text, self._sent
        if cut <= sent:
            return ""
        findings = self._scanner.scan(t)
        for f in findings:  # never cut through a secret
            if f.start < cut < f.end:
                cut = f.end if f.start < sent else f.start
        parts: list[str] = []
        pos = sent
        for f in findings:
            if f.end <= sent or f.start >= cut:
                continue
            start = max(f.start, sent)
            parts.append(t[pos:start])
            parts.append(MASK)
            pos = min(f.end, cut)
        parts.append(t[pos:cut])
        self._sent = cut
        if self._sent > 2 * self._lookback:  # keep only some context behind the cut
            drop = self._sent - self._lookback
            self._text, self._sent = self._text[drop:], self._sent - drop
        return "".join(parts)

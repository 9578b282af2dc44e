"""Sort a failed node call into hard (node gone), soft (node unwell) or client (our request)."""

from __future__ import annotations

import asyncio
import re
from typing import Literal

import httpx

Kind = Literal["hard", "soft", "client"]
_ANSWERED = re.compile(r"answered (\d{3})\b")  # bastion.llm.http's status error text


class NodeFailed(Exception):
    """One attempt on one node failed; the router decides where to go next."""

    def __init__(self, kind: Kind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class Diverged(Exception):
    """A replayed stream did not reproduce the text already shown to the client."""


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    return None


def classify_failure(exc: BaseException) -> NodeFailed:
    """Map an exception raised while talking to a node to a :class:`NodeFailed`."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, (httpx.ConnectError, ConnectionRefusedError, ConnectionResetError)):
            return NodeFailed("hard", f"unreachable: {e}")
        if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return NodeFailed("hard", f"connection lost: {e}")
        if isinstance(e, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
            return NodeFailed("soft", "timed out")
        status = _status(e)
        if status is not None:
            if status in (408, 429) or status >= 500:
                return NodeFailed("soft", f"HTTP {status}")
            return NodeFailed("client", f"HTTP {status}: {exc}")
    text = str(exc)
    m = _ANSWERED.search(text)
    if m:
        status = int(m.group(1))
        if status in (408, 429) or status >= 500:
            return NodeFailed("soft", f"HTTP {status}")
        return NodeFailed("client", text[:200])
    for needle in ("connect", "Connection", "refused", "reset", "closed"):
        if needle in text:
            return NodeFailed("hard", text[:200])
    return NodeFailed("soft", f"{type(exc).__name__}: {text[:200]}")

"""Sort a failed node call into hard (node gone), soft (node unwell) or client (our request).

By type only: the node clients raise :class:`~bastion.errors.ModelHTTPError` (with its
``status_code``), :class:`~bastion.errors.ModelUnreachable` and
:class:`~bastion.errors.ModelTimeout` with the transport error as their cause; no message
text is parsed, so rewording an error cannot change how failover works.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import httpx

from bastion.errors import ModelHTTPError, ModelTimeout, ModelUnreachable

Kind = Literal["hard", "soft", "client"]


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
    if isinstance(exc, ModelHTTPError):
        return exc.status_code
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    return None


def classify_failure(exc: BaseException) -> NodeFailed:
    """Map an exception raised while talking to a node to a :class:`NodeFailed`."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, (httpx.ConnectError, ConnectionRefusedError, ConnectionResetError)):
            return NodeFailed("hard", f"unreachable: {e}")
        if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return NodeFailed("hard", f"connection lost: {e}")
        if isinstance(e, (ModelTimeout, httpx.TimeoutException, asyncio.TimeoutError)):
            return NodeFailed("soft", "timed out")
        status = _status(e)
        if status is not None:
            if status in (408, 429) or status >= 500:
                return NodeFailed("soft", f"HTTP {status}")
            return NodeFailed("client", f"HTTP {status}: {str(exc)[:200]}")
    if any(isinstance(e, ModelUnreachable) for e in chain):  # no transport error as its cause
        return NodeFailed("hard", f"unreachable: {str(exc)[:200]}")
    return NodeFailed("soft", f"{type(exc).__name__}: {str(exc)[:200]}")

"""Bounds on an HTTP response bastion fetches for someone else (``web_fetch``, the browser broker).

Two limits, shared so both fetch paths hold them alike:

- :class:`BoundedBody` keeps at most ``limit`` body bytes and inflates gzip/deflate no further
  than that. httpx's own decoders inflate a whole network chunk at once (one 64 KiB deflate
  chunk can be 64 MiB of zeros), so callers read the raw stream (``aiter_raw``) and feed it here.
- :func:`total_time_limit` bounds one fetch as a whole: a server that trickles a byte per read
  never trips httpx's per-read timeout.

A bottom-layer module (it imports only :mod:`bastion.errors`), so tools and security alike use it.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bastion.errors import ToolError

ACCEPT_ENCODING = "gzip, deflate"  # the codings BoundedBody inflates; ask for no others


class BoundedBody:
    """A response body kept up to ``limit`` bytes, inflating gzip/deflate no further than that.

    Args:
        encoding: The response's ``Content-Encoding`` header (empty for none).
        limit: The most body bytes kept (after inflating).

    Raises:
        ToolError: For an encoding other than gzip, deflate or identity.

    """

    def __init__(self, encoding: str, limit: int) -> None:
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        self._inflate: Any = None
        self._deflate_raw_retry = False
        if codings == ["gzip"] or codings == ["x-gzip"]:
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif codings == ["deflate"]:
            self._inflate = zlib.decompressobj()
            self._deflate_raw_retry = True  # some servers send raw deflate without a header
        elif codings:
            raise ToolError(f"unsupported content encoding {encoding!r}",
                            fix="the server must send gzip, deflate or no encoding")
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def feed(self, raw: bytes) -> bool:
        """Add a raw chunk; return ``False`` once the limit is reached (stop reading)."""
        room = self.limit - len(self.data)
        if room <= 0:  # (zlib reads a max_length of 0 as "no limit")
            self.truncated = self.truncated or bool(raw)
            return False
        if self._inflate is None:
            self.data += raw[:room]
            self.truncated = len(raw) > room
            return not self.truncated
        try:
            out = self._inflate.decompress(raw, room)
        except zlib.error as exc:
            if not (self._deflate_raw_retry and not self.data):
                raise ToolError("the response body is not valid compressed data") from exc
            self._deflate_raw_retry = False
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._inflate.decompress(raw, room)
        self._deflate_raw_retry = False
        self.data += out
        if self._inflate.unconsumed_tail:
            self.truncated = True
            return False
        return True


@asynccontextmanager
async def total_time_limit(seconds: float, url: str, *, fix: str) -> AsyncIterator[None]:
    """Run the body within ``seconds`` in all, else raise :class:`ToolError` naming ``url``.

    Args:
        seconds: The wall-clock bound of the whole fetch (redirects and body included).
        url: The URL fetched, for the message.
        fix: What the user can do when the site is slow but legitimate.

    """
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise ToolError(f"fetching {url} took longer than {seconds:g} s", fix=fix) from exc

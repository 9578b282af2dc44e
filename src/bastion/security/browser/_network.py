"""The browser's only way out: every http(s) request is answered from bastion's process.

Chromium runs without a network of its own (a bubblewrap network namespace, and a dead proxy
for anything not intercepted). Each request it makes reaches :class:`RequestBroker`, which
checks the scheme, the egress allowlist and -- at connect time, after DNS -- the SSRF guard of
``web_fetch``, then fetches it with bastion's client and fulfils the browser's request.

Redirects are never handed to the browser as 3xx (Playwright does not route the follow-up
request, so a real redirect would bypass the checks): a page navigation gets a tiny page that
refreshes to the target (which comes back here and is checked), a sub-resource is followed
here hop by hop, each hop checked.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from bastion.errors import ToolError
from bastion.tools.builtin.web import DirectFetcher, _GuardedTransport

_HOP = {"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
        "content-length", "accept-encoding", "te", "trailer", "proxy-authorization"}
_DROP_RESPONSE = {"content-encoding", "content-length", "transfer-encoding", "connection",
                  "keep-alive", "strict-transport-security", "alt-svc"}
_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?["']?([^"';]+)""", re.I)


def check_url(fetcher: DirectFetcher, url: str) -> None:
    """Raise :class:`ToolError` when the browser may not request ``url`` (before any DNS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ToolError(f"the browser may not open {parts.scheme or 'scheme-less'}: URLs",
                        fix="use an http(s) URL")
    if not parts.hostname:
        raise ToolError(f"URL {url!r} has no host")
    fetcher.check_egress(url)
    fetcher_host_literal(fetcher, parts.hostname)


def fetcher_host_literal(fetcher: DirectFetcher, host: str) -> None:
    """Refuse a literal private/loopback address early (names are checked after DNS)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    fetcher.check(ip, host)


@dataclass(slots=True)
class Blocked:
    """A request the broker refused."""

    url: str
    reason: str


class SessionNet:
    """What the broker reports to one browser session."""

    def __init__(self, downloads: Path) -> None:
        self.downloads_dir = downloads
        self.blocked: list[Blocked] = []
        self.downloads: list[Path] = []
        self.redirect_target: str | None = None  # where the last redirect page points
        self.requests = 0

    def drain(self) -> tuple[list[Blocked], list[Path]]:
        """Return and forget what happened since the last call."""
        blocked, downloads = self.blocked, self.downloads
        self.blocked, self.downloads = [], []
        return blocked, downloads


class RequestBroker:
    """Fetches the browser's requests under the egress policy and the SSRF guard."""

    def __init__(self, fetcher: DirectFetcher, *, max_bytes: int, timeout_s: float,
                 on_block: Callable[[str | None, str, str], None] | None = None) -> None:
        self.fetcher = fetcher
        self.max_bytes = max_bytes
        self.on_block = on_block
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(fetcher), timeout=httpx.Timeout(timeout_s),
            trust_env=False, follow_redirects=False)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def handle(self, route: Any, request: Any, net: SessionNet, session_id: str | None
                     ) -> None:
        """Answer one intercepted request (Playwright route handler)."""
        net.requests += 1
        url = request.url
        is_nav = bool(request.is_navigation_request()) and request.frame.parent_frame is None
        try:
            status, headers, body, final = await self._fetch(
                request.method, url, await request.all_headers(), request.post_data_buffer,
                follow=not is_nav)
        except ToolError as exc:
            reason = exc.user_text()
            net.blocked.append(Blocked(url, reason))
            if self.on_block is not None:
                self.on_block(session_id, url, reason)
            if is_nav:  # show the model why, instead of a blank error page
                page = f"<title>Blocked by bastion</title><h1>Blocked by bastion</h1>" \
                       f"<p>{html.escape(url)}</p><p>{html.escape(reason)}</p>"
                await route.fulfill(status=403, content_type="text/html", body=page)
            else:
                await route.abort("blockedbyclient")
            return
        location = headers.get("location")
        if 300 <= status < 400 and location:
            target = urljoin(final, location)
            net.redirect_target = target
            keep = {k: v for k, v in headers.items() if k == "set-cookie"}
            js_target = json.dumps(target).replace("<", "\\u003c")  # no </script> break-out
            shim = (f"<!doctype html><title>Redirecting</title><script>location.replace("
                    f"{js_target})</script><noscript><meta http-equiv=refresh "
                    f'content="0;url={html.escape(target, quote=True)}"></noscript>')
            await route.fulfill(status=200, headers={**keep, "content-type": "text/html"},
                                body=shim)
            return
        if "attachment" in headers.get("content-disposition", "").lower():
            net.downloads.append(self._save(net, final, headers, body))
        await route.fulfill(status=status, headers=headers, body=body)

    async def _fetch(self, method: str, url: str, headers: dict[str, str],
                     body: bytes | None, *, follow: bool
                     ) -> tuple[int, dict[str, str], bytes, str]:
        send = {k: v for k, v in headers.items() if k.lower() not in _HOP and not k.startswith(":")}
        for _ in range(6):
            check_url(self.fetcher, url)
            try:
                async with self._client.stream(method, url, headers=send, content=body) as resp:
                    out: dict[str, str] = {}
                    for key, value in resp.headers.multi_items():
                        k = key.lower()
                        if k in _DROP_RESPONSE:
                            continue
                        out[k] = f"{out[k]}\n{value}" if k in out else value
                    if follow and resp.is_redirect and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        if resp.status_code in (301, 302, 303):
                            method, body = "GET", None
                        continue
                    data = bytearray()
                    async for chunk in resp.aiter_bytes():
                        data += chunk
                        if len(data) > self.max_bytes:
                            raise ToolError(f"response of {url} is larger than "
                                            f"{self.max_bytes // 1_000_000} MB",
                                            fix="raise browser.max_response_mb")
                    return resp.status_code, out, bytes(data), url
            except httpx.HTTPError as exc:
                raise ToolError(f"fetching {url} failed: {exc}") from None
        raise ToolError(f"too many redirects from {url}")

    @staticmethod
    def _save(net: SessionNet, url: str, headers: dict[str, str], body: bytes) -> Path:
        match = _FILENAME.search(headers.get("content-disposition", ""))
        raw = unquote(match.group(1)) if match else Path(urlsplit(url).path).name
        name = re.sub(r"[^A-Za-z0-9._-]", "_", raw).lstrip(".")[:120] or "download"
        net.downloads_dir.mkdir(parents=True, exist_ok=True)
        path = net.downloads_dir / name
        stem, n = path.stem, 1
        while path.exists():
            path = path.with_name(f"{stem}-{n}{path.suffix}")
            n += 1
        path.write_bytes(body)
        return path

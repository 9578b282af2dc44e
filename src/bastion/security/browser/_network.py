"""The browser's only way out: every http(s) request is answered from bastion's process.

Chromium runs without a network of its own (a bubblewrap network namespace, and a dead proxy
for anything not intercepted). Each request it makes reaches :class:`RequestBroker`, which
checks the scheme, the egress allowlist and -- at connect time, after DNS -- the SSRF guard of
``web_fetch``, then fetches it with bastion's client and fulfils the browser's request.

Redirects are never handed to the browser as 3xx (Playwright does not route the follow-up
request, so a real redirect would bypass the checks): a page navigation gets a tiny page that
refreshes to the target (which comes back here and is checked), a sub-resource is followed
here hop by hop, each hop checked.

Every fetch holds :mod:`bastion._http_limits`, as ``web_fetch`` does: at most ``max_bytes``
body bytes (gzip/deflate inflated no further; httpx's decoder would inflate a whole chunk
first) and ``timeout_s`` for the whole fetch, redirects and body included. A response over
either limit is refused, not truncated: a cut page or download would look whole.

The broker keeps no cookies: each browser context holds its own (``Set-Cookie`` is handed to
the page, which sends its ``Cookie`` header back), so one session's logins never travel with
another session's requests. Downloads are written with :func:`write_new_file`'s
``openat``/``O_NOFOLLOW`` walk, never through a link a sandboxed process planted in the
workspace; a download whose server-chosen name shows a risky type the URL did not show is not
saved until the same URL is opened again, which the ``download-url`` risk rule then flags.
"""

from __future__ import annotations

import html
import http.cookiejar
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx

from bastion._http_limits import ACCEPT_ENCODING, BoundedBody, total_time_limit
from bastion.errors import ToolError
from bastion.security.browser.rules import download_kind
from bastion.tools.builtin._paths import write_new_file
from bastion.tools.builtin.web import DirectFetcher, _GuardedTransport

_HOP = {"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
        "content-length", "accept-encoding", "te", "trailer", "proxy-authorization"}
_DROP_RESPONSE = {"content-encoding", "content-length", "transfer-encoding", "connection",
                  "keep-alive", "strict-transport-security", "alt-svc"}
_FILENAME = re.compile(r"""filename\*=(?:UTF-8'[^']*')?["']?([^"';]+)""", re.I)
_FILENAME_PLAIN = re.compile(r"""filename=["']?([^"';]+)""", re.I)


def download_name(url: str, headers: dict[str, str]) -> str:
    """Return a safe file name for a download: one path component, ``[A-Za-z0-9._-]`` only.

    The server's ``Content-Disposition`` name (``filename*`` first) is untrusted: it is
    percent-decoded, cut to its last path component, stripped of leading dots and anything
    outside the safe set, and shortened to 120 characters keeping its extension.
    """
    cd = headers.get("content-disposition", "")
    match = _FILENAME.search(cd) or _FILENAME_PLAIN.search(cd)
    raw = unquote(match.group(1)) if match else unquote(urlsplit(url).path)
    raw = re.split(r"[/\\]", raw.strip())[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", raw).lstrip(".")
    if len(name) > 120:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem[:110]}.{ext[:9]}" if dot and len(ext) <= 9 else name[:120]
    return name or "download"


class _NoCookies(http.cookiejar.CookiePolicy):
    """Refuse every cookie: the browser contexts keep their own, per session."""

    netscape, rfc2965, hide_cookie2 = True, False, False

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        """Store nothing."""
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        """Send nothing."""
        return False

    def domain_return_ok(self, domain: str, request: Any) -> bool:
        """Send nothing."""
        return False

    def path_return_ok(self, path: str, request: Any) -> bool:
        """Send nothing."""
        return False


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


def norm_url(url: str) -> str:
    """Return ``url`` as the browser shows it (no fragment, lower-case host, a path)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme.lower(), p.netloc.lower(), p.path or "/", p.query, ""))


@dataclass(slots=True)
class Blocked:
    """A request the broker refused."""

    url: str
    reason: str


@dataclass(slots=True)
class Download:
    """A file the broker saved: its workspace-relative path and size."""

    path: str
    size: int


class SessionNet:
    """What the broker reports to one browser session.

    Args:
        workspace: The workspace root (downloads are written below it, never through links).
        folder: The session's downloads folder, relative to ``workspace``.

    """

    def __init__(self, workspace: Path, folder: str) -> None:
        self.workspace = workspace
        self.folder = folder
        self.blocked: list[Blocked] = []
        self.downloads: list[Download] = []
        self.redirect_target: str | None = None  # where the last redirect page points
        self.requests = 0
        # URL -> why: downloads whose server-chosen name showed a risky type the URL did not;
        # the risk rules flag these URLs, and opening one again (so flagged) lets it be saved
        self._flagged: dict[str, str] = {}
        self._cleared: set[str] = set()

    def flag(self, url: str, why: str) -> None:
        """Remember that ``url`` serves a risky download its URL does not show."""
        self._flagged[norm_url(url)] = why

    def flagged(self, url: str) -> str | None:
        """Return why ``url`` is flagged (what the risk rules report), or None."""
        return self._flagged.get(norm_url(url))

    def clear(self, url: str) -> None:
        """``url`` is opened by a call the risk rules judged with its flag: it may be saved."""
        if norm_url(url) in self._flagged:
            self._cleared.add(norm_url(url))

    def cleared(self, url: str) -> bool:
        """Whether a flagged ``url`` was opened again by a call judged with its flag."""
        return norm_url(url) in self._cleared

    def drain(self) -> tuple[list[Blocked], list[Download]]:
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
        self.timeout_s = timeout_s
        self.on_block = on_block
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(fetcher), timeout=httpx.Timeout(timeout_s),
            trust_env=False, follow_redirects=False,
            headers={"Accept-Encoding": ACCEPT_ENCODING})
        self._client.cookies.jar.set_policy(_NoCookies())  # one jar would serve every session

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
            try:
                net.downloads.append(self._save(net, url, final, headers, body))
            except ToolError as exc:
                reason = f"download not saved: {exc.user_text()}"
                net.blocked.append(Blocked(url, reason))
                if self.on_block is not None:
                    self.on_block(session_id, url, reason)
                body = (f"<title>Blocked by bastion</title><h1>Blocked by bastion</h1>"
                        f"<p>{html.escape(reason)}</p>").encode()
                await route.fulfill(status=403, content_type="text/html", body=body)
                return
        await route.fulfill(status=status, headers=headers, body=body)

    async def _fetch(self, method: str, url: str, headers: dict[str, str],
                     body: bytes | None, *, follow: bool
                     ) -> tuple[int, dict[str, str], bytes, str]:
        """Fetch ``url`` (redirects followed here when ``follow``) within the size and time caps.

        The body is read raw and inflated by :class:`BoundedBody` no further than
        ``max_bytes`` (httpx's decoder would inflate a whole chunk first), and the whole fetch,
        redirects and body included, ends after ``timeout_s`` (a trickling server never trips
        the per-read timeout).
        """
        async with total_time_limit(self.timeout_s, url,
                                    fix="raise browser.action_timeout_s if the site is slow "
                                        "but legitimate"):
            return await self._fetch_hops(method, url, headers, body, follow=follow)

    async def _fetch_hops(self, method: str, url: str, headers: dict[str, str],
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
                    data = BoundedBody(resp.headers.get("content-encoding", ""),
                                       self.max_bytes)
                    async for chunk in resp.aiter_raw():
                        if not data.feed(chunk):
                            raise ToolError(f"response of {url} is larger than "
                                            f"{self.max_bytes / 1_000_000:g} MB",
                                            fix="raise browser.max_response_mb")
                    return resp.status_code, out, bytes(data.data), url
            except httpx.HTTPError as exc:
                # from None: httpx's error holds the request (credentials)
                raise ToolError(f"fetching {url} failed: {exc}") from None
        raise ToolError(f"too many redirects from {url}")

    @staticmethod
    def _save(net: SessionNet, url: str, final: str, headers: dict[str, str], body: bytes
              ) -> Download:
        """Write a download into the session's folder (never through a link); see module doc."""
        name = download_name(final, headers)
        kind = download_kind(name)
        shown = kind is None or any(download_kind(urlsplit(u).path) == kind
                                    for u in (url, final))
        if not shown and not net.cleared(url):
            net.flag(url, f"the server names its download {name!r} ({kind} file)")
            raise ToolError(
                f"the server named the download {name!r} ({kind} file), which its URL did "
                "not show, so no approval covered it",
                fix=f"open {url} again (the same link or browser_navigate): the download "
                    "risk rules now ask a human first")
        rel = write_new_file(net.workspace, net.folder, name, body)
        return Download(rel, len(body))

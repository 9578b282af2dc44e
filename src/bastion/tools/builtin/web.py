"""``web_fetch`` and the direct HTTP fetcher with its SSRF guard.

The guard sits where the socket is opened: every connection (the first request and every
redirect) resolves the host, refuses the call if *any* resolved address is loopback,
link-local, private, multicast, reserved or otherwise not globally routable (unless the
fetcher allows private targets), and then connects to the address it checked, so a DNS
answer that changes between check and connect (rebinding) cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from bastion._http_limits import ACCEPT_ENCODING, BoundedBody, total_time_limit
from bastion.addresses import IPAddress, address_problem, is_metadata
from bastion.crypto.pinning import wrap_backend
from bastion.errors import ToolError
from bastion.tools.base import Risk, ToolContext, ToolOutput, tool

__all__ = ["DirectFetcher", "address_problem", "html_to_text", "web_fetch"]
_FIX_PRIVATE = "only public addresses are reachable (security.allow_private_network allows others)"


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that checks every destination address before connecting."""

    def __init__(self, fetcher: DirectFetcher) -> None:
        self._fetcher = fetcher
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._fetcher.resolve(host, port)
        error: OSError | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (OSError, httpcore.ConnectError) as exc:
                error = exc if isinstance(exc, OSError) else OSError(str(exc))
        raise ToolError(f"cannot connect to {host}:{port}: {error}")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise ToolError("unix sockets are not reachable from web_fetch")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, fetcher: DirectFetcher) -> None:
        super().__init__(retries=0)
        # httpx has no public hook for the network backend; swap the pool it built.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=10,
            network_backend=wrap_backend(_GuardedBackend(fetcher)),  # + TLS pins, if any
        )


class DirectFetcher:
    """Fetches http(s) URLs from bastion's own process, with the SSRF guard.

    Args:
        allow_private: Allow loopback, private and link-local destinations.
        allowed_networks: CIDRs reachable even when ``allow_private`` is false
            (e.g. one internal service).
        allow_domains: When set, only these names (and their sub-domains) are fetched.
        allow_ports: When set, only these ports.
        timeout_s: Connect/read timeout per request.
        max_redirects: Redirects followed; each target is checked again.
        max_bytes: Ceiling of the body bytes read per fetch (after decompression), whatever
            the caller asks for: bastion's own process never holds more of a response.
        max_chars: Ceiling of the ``max_chars`` a tool call may ask for.
        total_timeout_s: Wall-clock bound of one fetch, redirects and body included (a server
            that trickles a byte per read never trips the per-read ``timeout_s``).

    """

    def __init__(
        self,
        allow_private: bool = False,
        *,
        allowed_networks: Iterable[str] = (),
        timeout_s: float = 20.0,
        max_redirects: int = 5,
        allow_domains: Iterable[str] | None = None,
        allow_ports: Iterable[int] | None = None,
        max_bytes: int = 4_000_000,
        max_chars: int = 100_000,
        total_timeout_s: float = 30.0,
        egress_setting: str = "security.egress.web_fetch",
        allow_metadata: bool = False,
    ) -> None:
        self.allow_metadata = allow_metadata  # link-local / cloud metadata: its own switch
        self.egress_setting = egress_setting  # where the allowlist is configured, for fixes
        self.allow_private = allow_private
        self.max_bytes = max_bytes
        self.max_chars = max_chars
        self.total_timeout_s = total_timeout_s
        self.allowed_networks = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.allow_domains = (
            None if allow_domains is None
            else [d.strip().lower().removeprefix("*.").rstrip(".") for d in allow_domains]
        )
        self.allow_ports = None if allow_ports is None else {int(p) for p in allow_ports}

    def check_egress(self, url: str) -> None:
        """Refuse a URL outside the declared egress allowlist (``egress_setting``)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        fix = f"add it under {self.egress_setting} (domains, cidrs, ports)"
        where = f"the egress allowlist ({self.egress_setting})"
        if self.allow_ports is not None and port not in self.allow_ports:
            raise ToolError(f"port {port} of {host} is not in {where}", fix=fix)
        if self.allow_domains is None:
            return
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            ip = None
        if ip is not None:
            if not any(ip in net for net in self.allowed_networks):
                raise ToolError(f"{host} is not in {where}", fix=fix)
            return
        if not any(host == d or host.endswith("." + d) for d in self.allow_domains):
            raise ToolError(f"{host} is not in {where}", fix=fix)

    def check(self, ip: IPAddress, host: str) -> None:
        """Raise :class:`ToolError` when ``ip`` may not be contacted."""
        if not self.allow_metadata and is_metadata(ip):
            why = address_problem(ip) or f"{ip} is a link-local address"  # names an embedded IPv4
            raise ToolError(f"refused to fetch {host}: {why}, a cloud metadata address "
                            "(allow_private_network does not cover it)",
                            fix="set security.allow_metadata: true only if a tool must reach "
                            "instance metadata")
        if self.allow_private or any(ip in net for net in self.allowed_networks):
            return
        problem = address_problem(ip)
        if problem:
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise ToolError(f"refused to fetch {shown}: {problem}", fix=_FIX_PRIVATE)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` and check every address; return them in connect order."""
        try:
            ips = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise ToolError(f"cannot resolve {host}: {exc.strerror}") from exc
            ips = []
            for info in infos:
                ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
                if ip not in ips:
                    ips.append(ip)
        for ip in ips:  # all of them: a mixed answer is refused, not filtered
            self.check(ip, host)
        return ips

    async def get(self, url: str, *, max_bytes: int) -> tuple[int, str, str]:
        """Return (status, content type, text) of ``url``, following checked redirects.

        At most ``min(max_bytes, self.max_bytes)`` body bytes are kept (compressed bodies are
        inflated only up to that size), and the whole fetch ends after ``total_timeout_s``.
        """
        limit = max(1, min(max_bytes, self.max_bytes))
        async with total_time_limit(
                self.total_timeout_s, url,
                fix="raise security.web_fetch.timeout_s if the site is slow but legitimate"):
            return await self._get(url, limit)

    async def _get(self, url: str, limit: int) -> tuple[int, str, str]:
        timeout = httpx.Timeout(self.timeout_s)
        async with httpx.AsyncClient(
            transport=_GuardedTransport(self), timeout=timeout, trust_env=False,
            follow_redirects=False, headers={"User-Agent": "bastion-web-fetch/0.1",
                                             "Accept-Encoding": ACCEPT_ENCODING},
        ) as client:
            for _ in range(self.max_redirects + 1):
                _check_url(url)
                self.check_egress(url)  # every hop, redirects included
                try:
                    async with client.stream("GET", url) as resp:
                        if resp.is_redirect and "location" in resp.headers:
                            url = urljoin(url, resp.headers["location"])
                            continue
                        body = BoundedBody(resp.headers.get("content-encoding", ""), limit)
                        async for chunk in resp.aiter_raw():
                            if not body.feed(chunk):
                                break
                        ctype = resp.headers.get("content-type", "")
                        text = body.data.decode(resp.charset_encoding or "utf-8", "replace")
                        if body.truncated:
                            text += f"\n[truncated at {limit} bytes]"
                        return resp.status_code, ctype, text
                except httpx.HTTPError as exc:
                    # from None: httpx's error holds the request (secret headers)
                    raise ToolError(f"fetching {url} failed: {exc}") from None
        raise ToolError(f"too many redirects (more than {self.max_redirects})")


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ToolError(f"unsupported URL scheme {parts.scheme!r}", fix="use an http(s) URL")
    if not parts.hostname:
        raise ToolError(f"URL {url!r} has no host")


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
              "article", "header", "footer", "pre", "table", "ul", "ol", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip:
            self._skip -= 1
        elif tag in self._BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    """Return the readable text of an HTML page (scripts and styles dropped)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.out).splitlines())
    return "\n".join(line for line in lines if line)


@tool(risk=Risk.MEDIUM, read_only=True, egress=True)
async def web_fetch(ctx: ToolContext, url: str, max_chars: int = 20_000) -> ToolOutput:
    """Fetch a web page (http or https) and return its text.

    Args:
        ctx: The call's context from the gateway (its HTTP client applies the egress policy).
        url: The address to fetch.
        max_chars: Return at most this many characters of text (capped by
            ``security.web_fetch.max_chars``).

    """
    if ctx.http is None:
        raise ToolError("web_fetch has no HTTP client in this context")
    if max_chars < 1:
        raise ToolError(f"max_chars must be at least 1, not {max_chars}",
                        fix="ask for a positive number of characters")
    limit = min(max_chars, ctx.http.max_chars)
    status, ctype, body = await ctx.http.get(url, max_bytes=max(4 * limit, 65_536))
    text = html_to_text(body) if "html" in ctype.lower() else body
    if len(text) > limit:
        text = text[:limit] + f"\n[... truncated at {limit} characters]"
    out = f"HTTP {status} ({ctype or 'unknown type'})\n{text}"
    return ToolOutput(out, data={"status": status, "content_type": ctype}, is_error=status >= 400)

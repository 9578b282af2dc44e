"""The SSRF guard of web_fetch, against a real HTTP server on loopback."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bastion.errors import ToolError
from bastion.tools.base import ToolContext
from bastion.tools.builtin.web import DirectFetcher, address_problem, html_to_text, web_fetch


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/redirect-to/"):])
            self.end_headers()
            return
        if self.path == "/big":
            body = b"x" * 200_000
            ctype = "text/plain"
        else:
            body = (b"<html><head><title>T</title><script>evil()</script></head>"
                    b"<body><h1>Hello</h1><p>from   bastion</p></body></html>")
            ctype = "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(("ip", "label"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("192.168.0.1", "private"), ("172.16.5.4", "private"), ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"), ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"),
    ("::ffff:127.0.0.1", "loopback"), ("100.64.0.1", "not a globally routable"),
    ("240.0.0.1", "private"),
])
def test_non_public_addresses(ip: str, label: str) -> None:
    problem = address_problem(ipaddress.ip_address(ip))
    assert problem is not None and label in problem


@pytest.mark.parametrize("ip", ["93.184.216.34", "1.1.1.1", "2606:4700::1111"])
def test_public_addresses(ip: str) -> None:
    assert address_problem(ipaddress.ip_address(ip)) is None


async def test_loopback_refused_by_default(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    for url in (server + "/", f"http://localhost:{port}/", f"http://[::ffff:127.0.0.1]:{port}/"):
        with pytest.raises(ToolError, match="loopback"):
            await DirectFetcher(allow_private=False).get(url, max_bytes=1000)


async def test_allowed_when_private_allowed(server: str) -> None:
    fetcher = DirectFetcher(allow_private=True)
    status, ctype, text = await fetcher.get(server + "/", max_bytes=10_000)
    assert status == 200 and ctype.startswith("text/html") and "<h1>Hello</h1>" in text


async def test_redirect_target_is_checked_again(server: str) -> None:
    fetcher = DirectFetcher(allowed_networks=["127.0.0.1/32"])
    status, _, _ = await fetcher.get(server + "/redirect-to//", max_bytes=1000)
    assert status == 200  # a redirect inside the allowed network is followed
    port = server.rsplit(":", 1)[1]
    with pytest.raises(ToolError, match=r"127\.0\.0\.2 is a loopback"):
        await fetcher.get(f"{server}/redirect-to/http://127.0.0.2:{port}/", max_bytes=1000)
    with pytest.raises(ToolError, match="unsupported URL scheme 'file'"):
        await fetcher.get(f"{server}/redirect-to/file:///etc/passwd", max_bytes=1000)


async def test_size_cap(server: str) -> None:
    _, _, text = await DirectFetcher(allow_private=True).get(server + "/big", max_bytes=1000)
    assert text.startswith("x" * 1000) and text.endswith("[truncated at 1000 bytes]")


async def test_bad_scheme() -> None:
    fetcher = DirectFetcher()
    with pytest.raises(ToolError, match="unsupported URL scheme"):
        await fetcher.get("ftp://example.com/", max_bytes=10)


async def test_web_fetch_tool_returns_page_text(server: str, tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path, http=DirectFetcher(allow_private=True))
    out = await web_fetch({"url": server + "/"}, ctx)
    assert out.text.startswith("HTTP 200 (text/html")
    assert "Hello\nfrom bastion" in out.text and "evil" not in out.text
    ctx = ToolContext(workspace=tmp_path, http=DirectFetcher())
    with pytest.raises(ToolError, match="loopback"):
        await web_fetch({"url": server + "/"}, ctx)


def test_html_to_text() -> None:
    assert html_to_text("<p>a <b>b</b></p><style>x{}</style><li>c</li>") == "a b\nc"


async def test_declared_egress_allowlist(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    fetcher = DirectFetcher(allow_private=True, allow_domains=["localhost"], allow_ports=[port])
    status, _, _ = await fetcher.get(f"http://localhost:{port}/", max_bytes=100)
    assert status == 200
    outside = r"not in the egress allowlist \(security.egress.web_fetch\)"
    with pytest.raises(ToolError, match="127.0.0.1 is " + outside):
        await fetcher.get(f"{server}/", max_bytes=100)  # a direct IP outside the cidrs
    with pytest.raises(ToolError, match="port 1 of localhost is not in"):
        await fetcher.get("http://localhost:1/", max_bytes=100)
    with pytest.raises(ToolError, match=outside):
        await fetcher.get(f"http://localhost:{port}/redirect-to/{server}/", max_bytes=100)

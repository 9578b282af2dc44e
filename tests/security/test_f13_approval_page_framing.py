"""F13 breach test: another site frames the approval page of a live ``bastion serve`` to trick a
click on "Allow" (clickjacking), or reaches it through a rebound DNS name.

A real ``python -m bastion serve`` on loopback, a real attacker page on another loopback origin,
opened in real chromium: the framed approval page must not render. The headers that make it so
are asserted on every kind of response, and the page keeps the token in ``sessionStorage``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from tests.integration.browser.fixtures import need_browser
from tests.integration.server.test_live_server import _bastion, serving


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    home = tmp_path_factory.mktemp("f13-home")
    init = _bastion("init", "--yes", home=home)
    assert init.returncode == 0, init.stderr
    token = yaml.safe_load((home / "bastion.yaml").read_text())["api"]["token"]
    with serving(home, timeout_s=120) as base:
        yield base, token


@pytest.fixture(scope="module")
def attacker(served: tuple[str, str]) -> Iterator[str]:
    """A page on another loopback origin that frames the approval and dashboard pages."""
    base = served[0]
    page = (f"<title>win a prize</title><p>click the button!</p>"
            f"<iframe id=a src='{base}/approvals' width=800 height=400></iframe>"
            f"<iframe id=i src='{base}/intel' width=800 height=400></iframe>").encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.asyncio
async def test_other_origin_cannot_frame_the_approval_page(
        served: tuple[str, str], attacker: str) -> None:
    need_browser()
    from playwright.async_api import async_playwright

    from bastion.security.browser._launch import require_chromium

    base = served[0]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=require_chromium(),
                                           args=["--no-sandbox"], headless=True)
        try:
            page = await browser.new_page()
            await page.goto(attacker, wait_until="load")
            rendered = []
            for frame in page.main_frame.child_frames:
                try:
                    text = await frame.evaluate("document.body ? document.body.innerText : ''")
                except Exception:  # an error page that cannot be read counts as not rendered
                    text = ""
                if "Pending approvals" in text or "Security dashboard" in text:
                    rendered.append(frame.url)
            assert len(page.main_frame.child_frames) == 2
            assert rendered == [], f"framed by another origin: {rendered}"
            assert all(not f.url.startswith(base) for f in page.main_frame.child_frames), \
                [f.url for f in page.main_frame.child_frames]
        finally:
            await browser.close()


def test_every_response_forbids_framing_and_referrers(served: tuple[str, str]) -> None:
    base, token = served
    responses = {
        "approvals page": httpx.get(f"{base}/approvals"),
        "intel page": httpx.get(f"{base}/intel"),
        "health": httpx.get(f"{base}/health"),
        "no token": httpx.get(f"{base}/v1/approvals"),
        "api": httpx.get(f"{base}/v1/approvals", headers={"Authorization": f"Bearer {token}"}),
    }
    for what, resp in responses.items():
        assert resp.headers.get("x-frame-options") == "DENY", what
        assert "frame-ancestors 'none'" in resp.headers.get("content-security-policy", ""), what
        assert resp.headers.get("referrer-policy") == "no-referrer", what
    for page in ("approvals page", "intel page"):
        html = responses[page].text
        assert "localStorage" not in html and "sessionStorage.setItem" in html, page


def test_a_rebound_host_name_is_refused(served: tuple[str, str]) -> None:
    base = served[0]
    port = base.rsplit(":", 1)[1]
    rebound = httpx.get(f"{base}/approvals", headers={"Host": f"attacker.example:{port}"})
    assert rebound.status_code == 400
    for host in ("127.0.0.1", "localhost"):
        assert httpx.get(f"{base}/health", headers={"Host": f"{host}:{port}"}).status_code == 200


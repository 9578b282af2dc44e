"""F22 follow-up breach tests: the browser broker's fetches are bounded in size and in time, as
``web_fetch``'s are (the shared :mod:`bastion._http_limits`).

A real loopback server and a real chromium session (bastion's broker answers every request):

- a deflate bomb: 64 MiB of zeros sent as one ~64 KiB ``Content-Encoding: deflate`` body. With
  httpx's own decoder one network chunk is inflated whole (~64 MiB in bastion's memory) before
  the size cap is looked at; the broker must never hold much more than the cap.
- a trickle: a byte every 0.1 s under a large ``Content-Length``. Each read is quick, so the
  per-read timeout never trips; the broker must drop the connection once its total time limit
  (``browser.action_timeout_s``) has passed, not keep reading for as long as the server likes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import pytest_asyncio

from bastion.errors import ToolError
from bastion.security.browser.manager import BrowserManager, BrowserSettings
from bastion.security.browser.setup import browser_fetcher
from tests.integration.browser.conftest import browser_config
from tests.integration.browser.fixtures import need_browser
from tests.integration.browser.site import Site

pytestmark = pytest.mark.asyncio(loop_scope="session")

CAP = 1_000_000  # browser.max_response_mb = 1
TIMEOUT_S = 2.0  # browser.action_timeout_s
TRICKLE_FOR_S = 15.0  # how long the trickling server keeps going if nobody hangs up
BOMB = zlib.compress(b"\0" * (64 << 20), 9)  # ~64 KiB on the wire, 64 MiB inflated


@dataclass
class Attacker:
    url: str
    port: int
    hung_up_after: float | None = None  # seconds from the first trickled byte to the close


class Blocks:
    """The audit recorder the manager reports refused requests to."""

    def __init__(self) -> None:
        self.reasons: dict[str | None, str] = {}

    def record(self, kind: str, *, actor: str | None = None, session_id: str | None = None,
               tool: str | None = None, decision: str | None = None, risk: str | None = None,
               arguments: Any = None, result: str | None = None,
               duration_ms: float | None = None, detail: Any = None) -> int:
        if kind == "browser.blocked":
            self.reasons[session_id] = detail["reason"]
        return len(self.reasons)


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    state = Attacker("", 0)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/bomb":
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Encoding", "deflate")
                self.send_header("Content-Length", str(len(BOMB)))
                self.end_headers()
                self.wfile.write(BOMB)
                return
            if self.path != "/trickle":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "10000000")
            self.end_headers()
            start = time.monotonic()
            try:
                while time.monotonic() - start < TRICKLE_FOR_S:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:  # the client hung up
                state.hung_up_after = time.monotonic() - start

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    state.url = f"http://127.0.0.1:{state.port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def manager(site: Site, attacker: Attacker, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[BrowserManager]:
    """A real chromium session manager whose egress allows the attacker's port."""
    need_browser()
    config = browser_config(site)
    assert config.browser.egress is not None
    config.browser.egress.ports.append(attacker.port)  # the page is allowed: only size/time bite
    manager = BrowserManager(
        BrowserSettings(max_response_bytes=CAP, action_timeout_s=TIMEOUT_S),
        fetcher=browser_fetcher(config), workspace=tmp_path_factory.mktemp("f22-browser"),
        audit=Blocks())
    yield manager
    await manager.aclose()


async def test_deflate_bomb_is_never_inflated_past_the_cap(
        manager: BrowserManager, attacker: Attacker) -> None:
    await manager.navigate("f22-warm", f"{attacker.url}/missing")  # chromium started first
    blocks = manager.audit
    assert isinstance(blocks, Blocks)
    tracemalloc.start()
    try:
        with contextlib.suppress(ToolError):  # the page may give up first; the broker goes on
            await manager.navigate("f22-bomb", f"{attacker.url}/bomb")
        deadline = time.monotonic() + 20
        while "f22-bomb" not in blocks.reasons and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * CAP, f"the broker held {peak / 1e6:.0f} MB for a {CAP / 1e6:g} MB cap"
    assert "larger than 1 MB" in blocks.reasons["f22-bomb"]


async def test_trickling_server_is_cut_off_at_the_total_time_limit(
        manager: BrowserManager, attacker: Attacker) -> None:
    with contextlib.suppress(ToolError):  # the page may give up first; the broker is tested
        await manager.navigate("f22-trickle", f"{attacker.url}/trickle")
    deadline = time.monotonic() + TIMEOUT_S + 4
    while attacker.hung_up_after is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert attacker.hung_up_after is not None, (
        f"the broker was still reading a trickle {TIMEOUT_S + 4:g} s after the request "
        f"(browser.action_timeout_s={TIMEOUT_S:g})")
    assert attacker.hung_up_after < TIMEOUT_S + 2

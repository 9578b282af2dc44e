"""F9 breach tests: no unsandboxed chromium unless explicitly chosen, and no WebRTC UDP around
bastion's route handler.

- ``browser.sandbox: auto`` on a machine where bubblewrap does not work (here: not on PATH, so
  the real probe fails) must refuse to start chromium, not run it on the host with
  ``--no-sandbox``.
- A page calls ``RTCPeerConnection`` with a STUN server on loopback UDP; a real UDP socket
  listens there. Run with ``browser.sandbox: none`` (the explicit unsafe opt-in: chromium on the
  host network, where only the launch flags and the init script stand between the page and
  the network) and in the shared bubblewrap browser.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bastion.errors import ToolError
from bastion.messages import ToolCall
from bastion.security.browser.manager import BrowserManager, BrowserSettings
from bastion.security.browser.setup import browser_fetcher
from tests.integration.browser.conftest import BrowserEnv, browser_config
from tests.integration.browser.fixtures import need_browser
from tests.integration.browser.site import Site

pytestmark = pytest.mark.asyncio(loop_scope="session")


def no_bwrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make bubblewrap unavailable for real: not on PATH, and probed afresh."""
    import bastion.security.sandbox.base as base

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(base, "_PROBED", {})


async def test_auto_without_bubblewrap_refuses_to_start_chromium(
        site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_browser()
    no_bwrap(monkeypatch, tmp_path)
    config = browser_config(site)
    manager = BrowserManager(BrowserSettings(sandbox="auto"), fetcher=browser_fetcher(config),
                             workspace=tmp_path)
    try:
        with pytest.raises(ToolError) as err:
            await manager.navigate("f9", f"{site.url}/")
        assert manager._browser is None, "chromium was started without a sandbox"
        text = err.value.user_text()
        assert "chromium is not started: no sandbox works here" in text
        assert "bubblewrap is not installed" in text and "browser.sandbox: none (unsafe)" in text
    finally:
        await manager.aclose()
    from bastion.cli._doctor import check_browser

    check = check_browser(config)
    assert check.status == "FAIL" and "chromium is not started" in check.detail
    config.browser.sandbox = "none"
    unsafe = check_browser(config)
    assert unsafe.status == "WARN" and unsafe.detail.startswith("UNSAFE")


async def stun_packets(sock: socket.socket, seconds: float) -> list[bytes]:
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            await asyncio.sleep(0.05)
    return got


@pytest.fixture
def stun() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


async def test_webrtc_sends_no_udp_around_bastion_unsandboxed(
        site: Site, tmp_path: Path, stun: socket.socket) -> None:
    need_browser()
    config = browser_config(site)
    manager = BrowserManager(BrowserSettings(sandbox="none"), fetcher=browser_fetcher(config),
                             workspace=tmp_path)
    port = stun.getsockname()[1]
    try:
        text = await manager.navigate("f9-rtc", f"{site.url}/webrtc?port={port}")
        packets = await stun_packets(stun, 1.5)
        assert packets == [], f"a page sent {len(packets)} UDP packets around bastion"
        assert "no webrtc" in await manager.read("f9-rtc"), text
    finally:
        await manager.aclose()


async def test_webrtc_is_gone_in_the_sandboxed_browser(env: BrowserEnv, stun: socket.socket
                                                       ) -> None:
    port = stun.getsockname()[1]
    res = await env.app.gateway.execute(
        ToolCall("browser_navigate", {"url": f"{env.site.url}/webrtc?port={port}"}),
        session_id="f9-rtc-bwrap")
    try:
        assert res.ok, res.text
        assert await stun_packets(stun, 0.5) == []
        assert "no webrtc" in res.text, res.text
    finally:
        await env.app.gateway.execute(ToolCall("browser_close_session", {}),
                                      session_id="f9-rtc-bwrap")

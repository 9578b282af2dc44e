"""F7 breach test: one browser session's login cookie must never travel with another's requests.

Session A logs in on a loopback site (it answers ``Set-Cookie``); session B, a fresh browser
context (another API session or a prompt-injected task), then opens the same site. Real
chromium, real route handler, the site echoes the ``Cookie`` header each request carried.
"""

from __future__ import annotations

import pytest

from bastion.messages import ToolCall
from bastion.security.gateway import ToolResult
from tests.integration.browser.conftest import BrowserEnv
from tests.integration.browser.site import COOKIE

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def run(env: BrowserEnv, sid: str, tool: str, **args: object) -> ToolResult:
    return await env.app.gateway.execute(ToolCall(tool, dict(args)), session_id=sid)


async def test_session_b_is_not_sent_session_a_cookie(env: BrowserEnv) -> None:
    a, b = "f7-a", "f7-b"
    try:
        login = await run(env, a, "browser_navigate", url=f"{env.site.url}/set-cookie")
        assert login.ok and "welcome" in login.text, login.text
        own = await run(env, a, "browser_navigate", url=f"{env.site.url}/echo-cookie")
        assert f"cookie header: [f7sid={COOKIE}]" in own.text, own.text  # A keeps its login
        other = await run(env, b, "browser_navigate", url=f"{env.site.url}/echo-cookie")
        assert COOKIE not in other.text, "session B was sent session A's cookie"
        assert "cookie header: []" in other.text, other.text
    finally:
        for sid in (a, b):
            await run(env, sid, "browser_close_session")

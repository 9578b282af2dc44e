"""The six browser tools through the gateway, with real chromium and a local site."""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

import pytest

from bastion.messages import ToolCall
from bastion.security.gateway import ToolResult
from bastion.tools.base import Risk
from tests.integration.browser.conftest import BrowserEnv
from tests.integration.browser.site import PASSWORD

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def run(env: BrowserEnv, sid: str, tool: str, **args: object) -> ToolResult:
    return await env.app.gateway.execute(ToolCall(tool, dict(args)), session_id=sid)


def ref(text: str, role: str, name: str) -> str:
    m = re.search(rf'- {role} "{re.escape(name)}"[^\n]*\[ref=([A-Za-z0-9]+)\]', text)
    assert m, f"no {role} {name!r} in:\n{text}"
    return m.group(1)


async def test_navigate_read_click_type_screenshot_close(env: BrowserEnv) -> None:
    sid = "flow"
    res = await run(env, sid, "browser_navigate", url=f"{env.site.url}/")
    assert res.ok, res.text
    assert "blue penguin" in res.text and 'button "Delete account"' in res.text
    assert "<form" not in res.text  # an accessibility tree, not HTML
    read = await run(env, sid, "browser_read")
    assert read.ok and ref(read.text, "link", "Profile form") == ref(res.text, "link",
                                                                     "Profile form")
    res = await run(env, sid, "browser_click", ref=ref(read.text, "link", "Profile form"))
    assert res.ok and "Page: Profile" in res.text, res.text
    res = await run(env, sid, "browser_type", ref=ref(res.text, "textbox", "Nickname"),
                    text="Pingu")
    assert res.ok and 'textbox "Nickname"' in res.text and "Pingu" in res.text, res.text
    res = await run(env, sid, "browser_click", ref=ref(res.text, "button", "Save"))
    assert res.ok and "Saved." in res.text, res.text
    assert env.site.state.saved[-1].startswith("nick=Pingu")
    shot = await run(env, sid, "browser_screenshot")
    assert shot.ok, shot.text
    png = env.app.gateway.environment.workspace / shot.data["path"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sid in [s["session_id"] for s in env.app.browser.sessions()]  # type: ignore[union-attr]
    res = await run(env, sid, "browser_close_session")
    assert res.ok and res.text == "browser session closed"
    assert sid not in [s["session_id"] for s in env.app.browser.sessions()]  # type: ignore[union-attr]
    res = await run(env, sid, "browser_click", ref="e1")  # a fresh session has no page
    assert not res.ok and "no element e1" in res.text


async def test_sessions_are_isolated(env: BrowserEnv) -> None:
    await run(env, "iso-a", "browser_navigate", url=f"{env.site.auth_url}/account")  # logs in
    manager = env.app.browser
    assert manager is not None
    a = await manager._sessions["iso-a"].context.cookies()
    await run(env, "iso-b", "browser_read")
    b = await manager._sessions["iso-b"].context.cookies()
    assert [c["name"] for c in a] == ["sid"] and b == []
    for sid in ("iso-a", "iso-b"):
        await run(env, sid, "browser_close_session")


async def test_preauth_logs_in_and_the_password_leaks_nowhere(
        env: BrowserEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    before = env.site.state.logins
    res = await run(env, "auth", "browser_navigate", url=f"{env.site.auth_url}/account")
    assert res.ok and "Balance: 42 credits" in res.text, res.text
    assert env.site.state.logins == before + 1 and env.site.state.bad_logins == 0
    # the same server under another name is not a configured site: no login there
    other = await run(env, "auth-other", "browser_navigate", url=f"{env.site.url}/account")
    assert "Page: Sign in" in other.text and env.site.state.logins == before + 1
    await run(env, "auth-other", "browser_close_session")
    # the login form was never shown to the model, the session stays logged in
    res2 = await run(env, "auth", "browser_navigate", url=f"{env.site.auth_url}/account")
    assert "Balance" in res2.text and env.site.state.logins == before + 1
    # a page that shows the password field with the value typed in it: masked in the tree
    page = env.app.browser._sessions["auth"].page  # type: ignore[union-attr]
    await page.goto(f"{env.site.auth_url}/login")
    await page.fill("input[type=password]", PASSWORD)
    read = await run(env, "auth", "browser_read")
    assert "[hidden by bastion]" in read.text
    events = env.app.audit.events(limit=500)
    kinds = {e.kind for e in events}
    assert "browser.preauth" in kinds
    pre = [e for e in events if e.kind == "browser.preauth" and e.session_id == "auth"]
    assert pre and pre[0].decision == "ok"
    assert "secret://env/testsite_login" not in str(pre[0].detail)  # only the user name ref
    for text in [res.text, res2.text, read.text, caplog.text,
                 *(str(e.to_dict()) for e in events)]:
        assert PASSWORD not in text
    env.app.audit.flush()
    db = Path(env.home) / "data" / "audit" / "audit.db"
    dbs = [db] if db.exists() else list(Path(env.home).rglob("audit.db"))
    assert dbs
    for path in dbs:
        for suffix in ("", "-wal"):
            f = Path(str(path) + suffix)
            if f.exists():
                assert PASSWORD.encode() not in f.read_bytes()
        rows = sqlite3.connect(path).execute("select * from sqlite_master").fetchall()
        assert rows
    await run(env, "auth", "browser_close_session")


async def test_typing_into_password_fields_is_refused(env: BrowserEnv) -> None:
    sid = "pw"
    res = await run(env, sid, "browser_navigate", url=f"{env.site.url}/form")
    env.approver.asked.clear()
    for name in ("Password", "Security code", "One-time code"):
        denied = await run(env, sid, "browser_type", ref=ref(res.text, "textbox", name),
                           text="hunter2")
        assert not denied.ok and denied.decision == "denied", denied.text
        assert "refused" in denied.text and "secret" in denied.text
    assert env.approver.asked == []  # refused outright, no human asked
    audited = env.app.audit.events(session_id=sid, tool="browser_type", decision="denied")
    assert len(audited) == 3
    ok = await run(env, sid, "browser_type", ref=ref(res.text, "textbox", "Nickname"),
                   text="Pingu")
    assert ok.ok
    page = env.app.browser._sessions[sid].page  # type: ignore[union-attr]
    assert await page.input_value("input[type=password]") == ""
    await run(env, sid, "browser_close_session")


async def test_risky_click_asks_a_human_and_a_denial_prevents_it(env: BrowserEnv) -> None:
    sid = "risky"
    res = await run(env, sid, "browser_navigate", url=f"{env.site.url}/")
    delete = ref(res.text, "button", "Delete account")
    env.approver.asked.clear()
    env.approver.answer = False
    try:
        denied = await run(env, sid, "browser_click", ref=delete)
    finally:
        env.approver.answer = True
    assert not denied.ok and denied.decision == "denied"
    assert env.site.state.deleted == 0  # the click never happened
    asked = env.approver.asked[0]
    assert asked.tool == "browser_click" and asked.risk == Risk.CRITICAL
    assert any("browser-click-destructive" in r for r in asked.reasons), asked.reasons
    assert any("browser-click-post-form" in r for r in asked.reasons)
    approved = await run(env, sid, "browser_click", ref=delete)
    assert approved.ok and "Account deleted." in approved.text
    assert env.site.state.deleted == 1
    # a link inside the site is not risky: nobody is asked
    env.approver.asked.clear()
    res = await run(env, sid, "browser_navigate", url=f"{env.site.url}/")
    await run(env, sid, "browser_click", ref=ref(res.text, "link", "Profile form"))
    assert env.approver.asked == []
    await run(env, sid, "browser_close_session")


async def test_network_policy_blocks_other_hosts_private_redirects_and_files(
        env: BrowserEnv) -> None:
    sid = "net"
    res = await run(env, sid, "browser_navigate", url=f"{env.site.url}/")
    res = await run(env, sid, "browser_click", ref=ref(res.text, "link", "Partner site"))
    assert res.ok and "Blocked by bastion" in res.text
    assert "[bastion blocked http://blocked.example/steal" in res.text
    direct = await run(env, sid, "browser_navigate", url="http://blocked.example/")
    assert not direct.ok and "allowlist" in direct.text
    for url in ("file:///etc/passwd", "javascript:alert(1)", "http://10.255.255.1/"):
        bad = await run(env, sid, "browser_navigate", url=url)
        assert not bad.ok, url
    redirected = await run(env, sid, "browser_navigate", url=f"{env.site.url}/go-private")
    assert "Blocked by bastion" in redirected.text and "10.255.255.1" in redirected.text
    blocked = env.app.audit.events(session_id=sid, kind="browser.blocked")
    assert {e.detail["url"] for e in blocked} >= {"http://blocked.example/steal",
                                                  "http://10.255.255.1/"}
    await run(env, sid, "browser_close_session")


async def test_download_lands_in_the_workspace(env: BrowserEnv) -> None:
    sid = "dl"
    res = await run(env, sid, "browser_navigate", url=f"{env.site.url}/")
    res = await run(env, sid, "browser_click", ref=ref(res.text, "link", "Report"))
    assert "[downloaded downloads/dl/report.csv" in res.text, res.text
    ws = env.app.gateway.environment.workspace
    assert (ws / "downloads" / "dl" / "report.csv").read_text() == "a,b\n1,2\n"
    await run(env, sid, "browser_close_session")


async def test_sessions_expire_by_actions_and_idle_time_and_are_capped(env: BrowserEnv) -> None:
    manager = env.app.browser
    assert manager is not None
    settings = manager.settings
    saved = (settings.max_actions, settings.idle_timeout_s, settings.max_sessions)
    try:
        settings.max_actions = 2
        await run(env, "exp", "browser_navigate", url=f"{env.site.url}/")
        await run(env, "exp", "browser_read")
        third = await run(env, "exp", "browser_read")
        assert "previous browser session expired (2 actions" in third.text
        settings.max_actions, settings.idle_timeout_s = 200, 0.05
        import asyncio

        await asyncio.sleep(0.1)
        idle = await run(env, "exp", "browser_read")
        assert "expired (idle" in idle.text
        settings.idle_timeout_s = 600
        settings.max_sessions = len(manager.sessions())
        full = await run(env, "exp-other", "browser_read")
        assert not full.ok and "too many browser sessions" in full.text
    finally:
        settings.max_actions, settings.idle_timeout_s, settings.max_sessions = saved
    closed = env.app.audit.events(session_id="exp", kind="browser.session_closed")
    assert {e.detail["reason"].split(":")[0] for e in closed} == {"expired"}
    await run(env, "exp", "browser_close_session")


async def test_failed_preauth_is_a_clear_error_without_the_value(
        env: BrowserEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.security.browser.preauth import Site

    manager = env.app.browser
    assert manager is not None
    wrong = "Wrong-pw-3vT!k2-browser"
    monkeypatch.setenv("BASTION_SECRET_TESTSITE_BAD", wrong)
    monkeypatch.setattr(manager, "sites", [Site(
        "badsite", ["127.0.0.1"], f"{env.site.url}/login", "alice@example.test",
        "secret://env/testsite_bad")])
    before = env.site.state.bad_logins
    res = await run(env, "badauth", "browser_navigate", url=f"{env.site.url}/account")
    assert not res.ok and "pre-authentication for badsite failed" in res.text, res.text
    assert env.site.state.bad_logins == before + 1 and wrong not in res.text
    failed = env.app.audit.events(session_id="badauth", kind="browser.preauth")
    assert failed and failed[0].decision == "failed" and wrong not in str(failed[0].to_dict())
    await run(env, "badauth", "browser_close_session")

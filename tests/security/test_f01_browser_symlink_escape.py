"""F1 breach test: links a sandboxed ``ln -s`` plants in the workspace must not carry bastion's
own writes (browser downloads and screenshots) out of it.

The workspace is mounted read-write into every shell/python sandbox, so the attacker controls
what ``downloads/<session>`` and ``screenshots`` are. Real chromium, a real download and a real
screenshot; the links are planted as such a sandbox would, absolute and ``../..`` relative.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.messages import ToolCall
from bastion.security.gateway import ToolResult
from tests.integration.browser.conftest import BrowserEnv

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def run(env: BrowserEnv, sid: str, tool: str, **args: object) -> ToolResult:
    return await env.app.gateway.execute(ToolCall(tool, dict(args)), session_id=sid)


def workspace(env: BrowserEnv) -> Path:
    return env.app.gateway.environment.workspace


def plant(link: Path, target: Path, *, relative: bool) -> None:
    """What ``ln -s`` in a sandbox does (a relative link needs no host path knowledge)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent) if relative else target, link)


async def download(env: BrowserEnv, sid: str, name: str) -> ToolResult:
    """Open a page and click its link to a download the server names ``name``."""
    page = await run(env, sid, "browser_navigate", url=f"{env.site.url}/get?name={name}")
    assert page.ok, page.text
    ref = page.text.split('link "Get it" [ref=')[1].split("]")[0]
    return await run(env, sid, "browser_click", ref=ref)


@pytest.fixture(params=[False, True], ids=["absolute", "relative"])
def relative(request: pytest.FixtureRequest) -> bool:
    """Plant the link with an absolute target, or a ``../..`` relative one."""
    return bool(request.param)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host directory outside the workspace (think ``~/.ssh`` or ``~/.config/autostart``)."""
    folder = tmp_path / "host"
    folder.mkdir()
    return folder


async def test_download_folder_swapped_for_a_link_to_a_host_dir(
        env: BrowserEnv, host: Path, relative: bool) -> None:
    sid = f"f1-dir-{int(relative)}"
    plant(workspace(env) / "downloads" / sid, host, relative=relative)
    try:
        res = await download(env, sid, "authorized_keys")
        assert list(host.iterdir()) == [], "bastion wrote outside the workspace"
        assert "download not saved" in res.text and "points outside the workspace" in res.text
        blocked = env.app.audit.events(session_id=sid, kind="browser.blocked")
        assert any("download not saved" in e.detail["reason"] for e in blocked)
    finally:
        (workspace(env) / "downloads" / sid).unlink()
        await run(env, sid, "browser_close_session")


async def test_dangling_link_at_the_next_download_name(
        env: BrowserEnv, host: Path, relative: bool) -> None:
    target = host / "authorized_keys"  # does not exist yet: a dangling link creates it
    sid = f"f1-name-{int(relative)}"
    folder = workspace(env) / "downloads" / sid
    plant(folder / "authorized_keys", target, relative=relative)
    try:
        res = await download(env, sid, "authorized_keys")
        assert not target.exists(), "bastion created a file outside the workspace"
        assert (folder / "authorized_keys").is_symlink()  # untouched
        assert f"[downloaded downloads/{sid}/authorized_keys-1" in res.text, res.text
        assert (folder / "authorized_keys-1").read_text() == "ATTACKER-CONTENT authorized_keys\n"
    finally:
        for f in folder.iterdir():
            f.unlink()
        await run(env, sid, "browser_close_session")


async def test_screenshot_folder_swapped_for_a_link_to_a_host_dir(
        env: BrowserEnv, host: Path, relative: bool) -> None:
    sid = f"f1-shot-{int(relative)}"
    link = workspace(env) / "screenshots"
    assert not link.exists() or link.is_dir()
    saved = link.rename(link.with_name("screenshots.keep")) if link.is_dir() else None
    plant(link, host, relative=relative)
    try:
        assert (await run(env, sid, "browser_navigate", url=f"{env.site.url}/")).ok
        res = await run(env, sid, "browser_screenshot")
        assert list(host.iterdir()) == [], "bastion wrote outside the workspace"
        assert not res.ok and "points outside the workspace" in res.text, res.text
        calls = env.app.audit.events(session_id=sid, tool="browser_screenshot")
        assert calls and "points outside the workspace" in str(calls[0].result)
    finally:
        link.unlink()
        if saved is not None:
            saved.rename(link)
        await run(env, sid, "browser_close_session")


async def test_server_named_executable_is_not_saved_without_approval(env: BrowserEnv) -> None:
    """The URL shows no risky type, the server's Content-Disposition names an .exe."""
    sid = "f1-exe"
    asked = len(env.approver.asked)
    try:
        first = await download(env, sid, "setup.exe")
        folder = workspace(env) / "downloads" / sid
        assert not (folder / "setup.exe").exists()
        assert "(exe file), which its URL did not show" in first.text, first.text
        assert len(env.approver.asked) == asked  # nothing asked a human so far
        again = await download(env, sid, "setup.exe")  # the same link: now a rule flags it
        rules = [r.reasons for r in env.approver.asked[asked:]]
        assert any("browser-click-download" in str(r) for r in rules), rules
        assert f"[downloaded downloads/{sid}/setup.exe" in again.text, again.text
    finally:
        await run(env, sid, "browser_close_session")

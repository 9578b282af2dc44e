"""The web UI's chat in real Chromium against a live ``bastion serve``.

One server per module: its model is the scripted OpenAI-compatible server
(``bastion.testing.openai_server --script``), so tool calls are deterministic; ``write_file`` is
raised to HIGH risk by a config rule, so it waits for an approval in the page. One more test
runs the shipped model. Assertions read the page's accessibility tree (``aria_snapshot``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from bastion.security.keystore import open_store
from tests.integration.server.test_live_server import _bastion, _env, serving

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
XSS = "<img src=x onerror=alert(document.domain)>"
STORY = " ".join(f"word{i}" for i in range(400))
SCRIPT = [
    {"when": "list the files", "tool": "list_files", "arguments": {"path": "."},
     "then": "I listed the workspace for you, and here is what the tool found, line by line, "
             "exactly as it came back from the sandbox. Here they are: {result}"},
    {"when": "write the note", "tool": "write_file",
     "arguments": {"path": "note.txt", "content": "hello from the web"},
     "then": "The tool said: {result}"},
    {"when": "write the plan", "tool": "write_file",
     "arguments": {"path": "plan.txt", "content": "the plan"},
     "then": "The tool said: {result}"},
    {"when": "show the evil file", "tool": "read_file", "arguments": {"path": "evil.txt"},
     "then": f"Model output {XSS} and **bold**; the file: {{result}}"},
    {"when": "tell a long story", "text": STORY},
]
WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@dataclass
class Web:
    base: str
    token: str  # the admin's
    bob: str  # a second user's key
    home: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _configure(home: Path, *, sso: bool = False, **model: Any) -> str:
    """Adjust the config ``bastion init`` wrote; return the admin token."""
    path = home / "bastion.yaml"
    config = yaml.safe_load(path.read_text())
    config["model"].update(model)
    config.setdefault("memory", {})["semantic"] = False  # no embedding model to load
    config.setdefault("intelligence", {})["enabled"] = False
    config.setdefault("hitl", {})["rules"] = [
        {"name": "web-test-writes", "level": "high", "tools": ["write_file"]}]
    if sso:  # only read when someone starts a sign-on (not in these tests)
        config["api"]["oidc"] = {"issuer": "http://127.0.0.1:9/", "client_id": "bastion",
                                 "client_secret": "secret://env/web_test_oidc"}
    path.write_text(yaml.safe_dump(config))
    return str(config["api"]["token"])


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    home = tmp_path_factory.mktemp("web-home")
    init = _bastion("init", "--yes", home=home)
    assert init.returncode == 0, init.stderr
    store = open_store(home)  # what `bastion users add` and `bastion keys create` do
    try:
        store.add_user("bob")
        bob, _ = store.create_key("bob", scopes=["chat", "sessions:read", "sessions:write",
                                                 "approvals"])
    finally:
        store.close()
    (home / "workspace").mkdir(exist_ok=True)
    (home / "workspace" / "evil.txt").write_text(f"{XSS}\n")
    script = home / "script.json"
    script.write_text(json.dumps(SCRIPT))
    port = _free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "bastion.testing.openai_server", "--port", str(port),
         "--script", str(script), "--token-delay", "0.02"],
        env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        token = _configure(home, backend="openai", name="fake-model", native_tools=True,
                           base_url=f"http://127.0.0.1:{port}/v1", sso=True)
        with serving(home) as base:
            yield Web(base, token, bob, home)
    finally:
        fake.terminate()
        fake.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("apt install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    opts = getattr(request, "param", {})
    context = browser.new_context(**opts)
    context.add_init_script(WATCH)
    p = context.new_page()
    dialogs: list[str] = []
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    p.set_default_timeout(15_000)
    yield p
    assert dialogs == [], f"a dialog opened: {dialogs}"
    assert p.evaluate("window.__csp") == [], "the page broke its own CSP"
    context.close()


def sign_in(page: Page, base: str, key: str, user: str) -> None:
    page.goto(base + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text(f"Signed in as {user}").wait_for()
    page.get_by_role("textbox", name="Message").wait_for()


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def conversation(page: Page) -> str:
    return page.get_by_role("log", name="Conversation").aria_snapshot()


def wait_idle(page: Page) -> None:
    """Wait until the turn has ended (Send is enabled again)."""
    page.get_by_role("button", name="Send").and_(page.locator(":enabled")).wait_for()


def test_sign_in_stream_tokens_and_see_the_tool_step(web: Web, page: Page) -> None:
    page.goto(web.base + "/")
    page.get_by_role("button", name="Sign in with SSO").wait_for()  # api.oidc is set
    sign_in(page, web.base, web.token, "admin")
    page.evaluate("""() => {
      window.__answers = [];
      new MutationObserver(() => {
        const a = document.querySelector('article.assistant .md');
        if (a) window.__answers.push(a.textContent);
      }).observe(document.querySelector('.transcript'),
                 {subtree: true, childList: true, characterData: true});
    }""")
    send(page, "list the files")
    wait_idle(page)
    snap = conversation(page)
    assert re.search(r'group: list_files done [\d.]+ ms · risk low · sandbox in-process', snap) \
        or re.search(r"list_files done risk low · sandbox in-process · [\d.]+ ms", snap), snap
    assert "Here they are: .: 1 files, 0 directories evil.txt" in snap
    seen = [t for t in page.evaluate("window.__answers") if t]
    final = seen[-1]
    partial = [t for t in dict.fromkeys(seen) if t != final]
    assert len(partial) >= 2, f"the answer did not arrive in pieces: {seen}"
    assert all(" ".join(final.split()).startswith(" ".join(t.split())) for t in partial), seen


def test_approve_a_high_call_and_see_it_run(web: Web, page: Page) -> None:
    sign_in(page, web.base, web.token, "admin")
    send(page, "write the note")
    approval = page.get_by_role("group", name="Approve write_file?")
    approval.wait_for()
    snap = approval.aria_snapshot()
    assert "strong: write_file needs your approval" in snap and "(risk high)" in snap
    assert "web-test-writes" in snap  # the reason
    assert '"content": "hello from the web"' in approval.inner_text()  # the exact arguments
    approval.get_by_role("button", name="Allow", exact=True).click()
    wait_idle(page)
    snap = conversation(page)
    assert "Allowed by api:admin" in snap and "wrote 18 bytes to note.txt" in snap
    assert (web.home / "workspace" / "note.txt").read_text() == "hello from the web"
    live = re.search(r"write_file done (risk \w+ · sandbox [\w-]+) · [\d.]+ ms", snap)
    assert live is not None, snap

    page.reload()  # the same session read back from the store: the step as it was shown
    step = page.get_by_role("group").filter(has_text="write_file")
    step.locator("summary").click()
    again = step.aria_snapshot()
    assert re.search(rf"write_file done {live.group(1)} · [\d.]+ ms", again), again
    assert "Allowed by api:admin" in again and "wrote 18 bytes to note.txt" in again


def test_deny_and_the_model_is_told(web: Web, page: Page) -> None:
    sign_in(page, web.base, web.token, "admin")
    send(page, "write the plan")
    page.get_by_role("button", name="Deny", exact=True).click()
    wait_idle(page)
    snap = conversation(page)
    assert "Denied by api:admin" in snap
    answer = page.get_by_role("article", name="Answer").last.aria_snapshot()
    assert "The tool said:" in answer and "denied" in answer  # what the model was told
    assert not (web.home / "workspace" / "plan.txt").exists()


def test_stop_cancels_the_turn(web: Web, page: Page) -> None:
    sign_in(page, web.base, web.token, "admin")
    send(page, "tell a long story")
    page.get_by_text("word3 ").wait_for()
    page.get_by_role("button", name="Stop").click()
    wait_idle(page)
    assert page.get_by_role("status").filter(has_text="Stopped.").count() == 1
    shown = page.get_by_role("article", name="Answer").last.inner_text()
    assert "word399" not in shown
    send(page, "list the files")  # the session is free again: no 409 "busy"
    wait_idle(page)
    assert "Here they are" in conversation(page)


def test_keyboard_only_chat_with_an_approval(web: Web, page: Page) -> None:
    sign_in(page, web.base, web.token, "admin")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # focus is back in the message box
    assert page.evaluate("document.activeElement.id") == "chat-input"
    page.keyboard.type("write the note again")
    page.keyboard.press("Enter")
    allow = page.get_by_role("button", name="Allow", exact=True)
    allow.wait_for()
    page.wait_for_function("document.activeElement.textContent === 'Allow'")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Deny"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    wait_idle(page)
    assert "wrote 18 bytes to note.txt" in conversation(page)
    page.keyboard.press("Shift+Tab")  # every control is reachable and named
    names = page.evaluate("""() => [...document.querySelectorAll('button, textarea, input, a')]
        .filter((e) => !e.disabled).map((e) => e.getAttribute('aria-label') || e.textContent
        || (e.labels && e.labels[0] && e.labels[0].textContent) || '')""")
    assert all(n.strip() for n in names), names


@pytest.mark.parametrize("page", [{"viewport": {"width": 375, "height": 740},
                                   "color_scheme": "dark"}], indirect=True)
def test_phone_width_and_dark_mode(web: Web, page: Page) -> None:
    sign_in(page, web.base, web.token, "admin")
    send(page, "write the note on a phone")
    page.get_by_role("button", name="Allow for this session").click()
    wait_idle(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    for name in ("Send", "Stop", "Sign out", "New chat"):
        box = page.get_by_role("button", name=name, exact=True).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, name
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(15, 19, 23)", bg  # the dark palette
    snap = page.locator("body").aria_snapshot()
    assert not re.search(r"- (button|textbox|link)\s*$", snap, re.M), snap  # all named


def test_xss_in_model_output_and_tool_result_renders_as_text(web: Web, page: Page) -> None:
    sign_in(page, web.base, web.token, "admin")
    send(page, f"show the evil file {XSS}")
    wait_idle(page)
    page.get_by_role("group").first.locator("summary").click()
    snap = conversation(page)
    assert snap.count(XSS) >= 3, snap  # my message, the tool result, the model's answer
    assert "strong: bold" in snap  # Markdown still renders
    assert page.locator(".transcript img").count() == 0


def test_security_headers_on_every_page(web: Web) -> None:
    index = httpx.get(web.base + "/")
    files = re.findall(r'(?:href|src)="(/web/[^"?]+)(?:\?v=\w+)?"', index.text)
    assert "/web/app.js" in files and "/web/app.css" in files
    files += ["/web/chat.js", "/web/markdown.js", "/web/pages/index.js",
              "/web/vendor/marked-18.2.1.esm.js", "/web/vendor/purify-3.4.18.min.js"]
    for path in ["/", *files]:
        h = httpx.get(web.base + path).headers
        csp = dict(p.strip().split(" ", 1) for p in h["content-security-policy"].split(";"))
        assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'", path
        assert csp["object-src"] == "'none'" and csp["base-uri"] == "'none'", path
        assert csp["frame-ancestors"] == "'none'" and csp["connect-src"] == "'self'", path
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer", path
        assert h["x-content-type-options"] == "nosniff" and "etag" in h, path
    for path in ("/approvals", "/intel", "/v1/auth/me", "/web/nope.js"):
        h = httpx.get(web.base + path).headers
        assert "frame-ancestors 'none'" in h["content-security-policy"], path
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer", path


def test_a_second_user_sees_none_of_the_first_users_sessions(web: Web, page: Page) -> None:
    mine = httpx.get(web.base + "/v1/sessions",
                     headers={"Authorization": f"Bearer {web.token}"}).json()["data"]
    assert mine, "the tests above made sessions for admin"
    sign_in(page, web.base, web.bob, "bob")
    sessions = page.get_by_role("navigation", name="Sessions").aria_snapshot()
    for s in mine:
        assert s["id"][:12] not in sessions and s["name"][:12] not in sessions
    page.goto(f"{web.base}/#/chat/{mine[0]['id']}")
    page.get_by_role("alert").filter(has_text="no session").wait_for()
    assert "article" not in conversation(page)


@pytest.mark.real_model
def test_chat_on_the_shipped_model(tmp_path: Path, browser: Browser) -> None:
    home = tmp_path / "real-home"
    home.mkdir()
    init = _bastion("init", "--yes", home=home)
    assert init.returncode == 0, init.stderr
    token = _configure(home, slots=1)  # one model worker: the test sends one message
    with serving(home) as base:
        context = browser.new_context()
        context.add_init_script(WATCH)
        page = context.new_page()
        page.set_default_timeout(300_000)  # a loaded 2-core machine: minutes per token
        sign_in(page, base, token, "admin")
        send(page, "Say hello in one short sentence.")
        answer = page.get_by_role("article", name="Answer").first
        answer.wait_for()
        wait_idle(page)
        assert answer.inner_text().strip(), "the shipped model's answer is empty"
        assert page.get_by_role("alert").count() == 0
        assert page.evaluate("window.__csp") == []
        context.close()

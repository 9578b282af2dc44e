"""The web UI's pages (sessions, knowledge, approvals, audit) in real Chromium.

One live ``python -m bastion serve`` (real SQLite, the shipped embedding model, the scripted
OpenAI-compatible model server) and one browser for the whole module; each user signs in in
their own browser context. Assertions read the pages' accessibility tree
(``locator.aria_snapshot()``), which is also what a screen reader gets.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bastion.security.keystore import open_store
from tests.fakes.hub import FakeHub, Repo
from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.browser.fixtures import need_browser
from tests.integration.server.test_live_server import serving

ADMIN = "web-pages-admin-token-0123456789abcdef"
XSS_NAME = "<img src=x onerror=document.title='pwned'>.md"
DOC_TEXT = ("Field notes. The quokkas on Rottnest Island eat ferns and leaves at dawn; "
            "they drink little water.\n")
WAIT_MS = 10_000
MODEL_REPO = "acme/Tiny-GGUF"
QUESTION = "What is the weather like in Berlin tomorrow?"
PLAYED = """
window.__played = [];  // every answer buffer the page starts playing
const start = AudioBufferSourceNode.prototype.start;
AudioBufferSourceNode.prototype.start = function (...args) {
  window.__played.push({seconds: this.buffer.duration, rate: this.buffer.sampleRate,
                        context: this.context.state});
  return start.apply(this, args);
};
"""


@dataclass
class World:
    base: str
    home: Path
    keys: dict[str, str]
    browser: Any

    def page(self, user: str, browser: Any = None, init: str = "", **context: Any) -> Any:
        """A new page of ``user``, signed in through the sign-in form (a cookie session)."""
        ctx = (browser or self.browser).new_context(**context)
        ctx.add_init_script(WATCH_CSP + init)
        page = ctx.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("dialog", lambda d: (_ALERTS.append(d.message), d.dismiss()))
        page.goto(self.base + "/")
        page.get_by_label("API key").fill(ADMIN if user == "admin" else self.keys[user])
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.get_by_text(f"Signed in as {user}").wait_for()
        return page

    def api(self, user: str) -> httpx.Client:
        key = ADMIN if user == "admin" else self.keys[user]
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {key}"},
                            timeout=120)


WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""
_ALERTS: list[str] = []  # any alert()/confirm() a page opened: an injected script ran


def _key(home: Path, user: str, *scopes: str, roles: tuple[str, ...] = ()) -> str:
    store = open_store(home)
    try:
        store.add_user(user, roles or ("user",))
        key, _ = store.create_key(user, scopes=scopes)
    finally:
        store.close()
    return key


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need_browser()
    from playwright.sync_api import sync_playwright

    from bastion.security.browser._launch import require_chromium

    home = tmp_path_factory.mktemp("web-pages")
    gguf = home / "Tiny-Q8_0.gguf"  # what the models page pulls from the local hub
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 82_000)  # 21 MB: three 10 MiB chunks
    with FakeOpenAIServer() as fake, FakeHub({MODEL_REPO: Repo({gguf.name: gguf})}) as hub:
        # a pull takes ~2.6 s, as from a real hub: its progress events (one per 0.25 s) reach
        # the page apart; ones that arrive in one network read are drawn once, as the last
        hub.rate = 8_000_000
        (home / "bastion.yaml").write_text(yaml.safe_dump({
            "model": {"backend": "openai", "base_url": fake.base_url, "name": "fake",
                      "native_tools": True},
            "api": {"token": ADMIN},
            "memory": {"enabled": True, "semantic": True},
            "intelligence": {"enabled": False},
        }))
        scopes = ("chat", "sessions:read", "sessions:write", "knowledge:write", "approvals")
        keys = {"alice": _key(home, "alice", *scopes), "bob": _key(home, "bob", *scopes)}
        hub_env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(home / "hf"), "HF_HUB_DISABLE_XET": "1",
                   "HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HF_TOKEN": None}
        with serving(home, env=hub_env) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=require_chromium(), headless=True,
                                         args=["--no-sandbox"])
            w = World(base, home, keys, browser)
            with w.api("alice") as alice:
                for sid, text in (("trip-plans", "pack the blue tent"),
                                  ("garden-log", "the tomatoes need water"),
                                  ("old-notes", "nothing important")):
                    r = alice.post(f"/v1/sessions/alice:{sid}/messages",  # her namespace
                                   json={"content": text, "stream": False})
                    assert r.status_code == 200, r.text
            try:
                yield w
            finally:
                browser.close()
    assert _ALERTS == [], f"a page opened a dialog: {_ALERTS}"


def _main(page: Any) -> Any:
    return page.locator("main")


def _open(world: World, page: Any, route: str) -> Any:
    """Go to the page at ``#/route`` (as a link would) and wait for its heading."""
    page.evaluate("(route) => { location.hash = '#/' + route; }", route)
    page.locator(f"main section.page-{route} h1").wait_for()
    assert page.evaluate("window.__csp") == [], "a page broke the CSP"
    return _main(page)


def _eventually(locator: Any, pattern: str, timeout_s: float = 30) -> str:
    """The aria snapshot of ``locator`` once it matches ``pattern`` (a regex)."""
    import time

    deadline = time.monotonic() + timeout_s
    snap = ""
    while time.monotonic() < deadline:
        snap = locator.aria_snapshot()
        if re.search(pattern, snap):
            return snap
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} never appeared in:\n{snap}")


def test_upload_a_document_then_find_it_with_search_and_its_name_is_text(world: World) -> None:
    page = world.page("alice")
    main = _open(world, page, "knowledge")
    page.get_by_label("Choose files to upload").set_input_files(
        [{"name": XSS_NAME, "mimeType": "text/markdown", "buffer": DOC_TEXT.encode()}])
    snap = _eventually(page.get_by_role("list", name="Documents"), re.escape(XSS_NAME))
    assert 'button "Remove <img src=x onerror=' in snap
    progress = page.get_by_role("progressbar", name="Upload progress")
    assert progress.get_attribute("value") == progress.get_attribute("max")
    assert main.locator("img").count() == 0  # the name is text, not markup
    assert page.title() != "pwned"

    main = _open(world, page, "sessions")
    page.get_by_role("searchbox", name="Search sessions and documents").fill(
        "what do quokkas eat")
    page.keyboard.press("Enter")
    snap = _eventually(page.get_by_role("list", name="Search results"), "quokkas")
    assert f"document {XSS_NAME}" in snap
    assert main.locator("img").count() == 0 and page.title() != "pwned"
    page.context.close()


def test_switch_between_sessions(world: World) -> None:
    page = world.page("alice")
    main = _open(world, page, "sessions")
    _eventually(page.get_by_role("list", name="Sessions"), "garden-log")
    page.get_by_role("link", name="Open alice:garden-log").click()
    _eventually(main, "the tomatoes need water")
    assert "#/chat/" in page.url
    page.go_back()
    page.get_by_role("link", name="Open alice:trip-plans").click()
    snap = _eventually(main, "pack the blue tent")
    assert "#/chat/" in page.url
    assert "tomatoes" not in snap
    page.context.close()


def test_export_as_markdown_and_json(world: World) -> None:
    page = world.page("alice")
    _open(world, page, "sessions")
    _eventually(page.get_by_role("list", name="Sessions"), "trip-plans")
    with page.expect_download() as md:
        page.get_by_role("button", name="Export alice:trip-plans as Markdown").click()
    assert md.value.suggested_filename == "alice_trip-plans.md"
    text = Path(md.value.path()).read_text()
    assert "pack the blue tent" in text and text.lstrip().startswith("#")
    with page.expect_download() as js:
        page.get_by_role("button", name="Export alice:trip-plans as JSON").click()
    data = json.loads(Path(js.value.path()).read_text())
    assert "pack the blue tent" in json.dumps(data)
    page.context.close()


def test_rename_and_delete_with_the_keyboard_only(world: World) -> None:
    page = world.page("alice")
    _open(world, page, "sessions")
    sessions = page.get_by_role("list", name="Sessions")
    _eventually(sessions, "old-notes")

    def tab_to(name: str) -> None:
        for _ in range(80):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.getAttribute('aria-label')") == name:
                return
        raise AssertionError(f"Tab never reached {name!r}")

    tab_to("Rename alice:old-notes")
    page.keyboard.press("Enter")
    field = page.get_by_role("textbox", name="New name for alice:old-notes")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == \
        "New name for alice:old-notes"
    field.press("Control+a")
    page.keyboard.type("archive 2025")
    page.keyboard.press("Enter")
    _eventually(sessions, r'link "Open archive 2025"')

    tab_to("Delete archive 2025")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    assert "Delete session archive 2025" in dialog.aria_snapshot()
    page.keyboard.press("Escape")  # cancelled: still there
    assert dialog.count() == 0
    assert "archive 2025" in sessions.aria_snapshot()
    tab_to("Delete archive 2025")
    page.keyboard.press("Enter")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Delete", focused  # the dialog's first button has the focus
    page.keyboard.press("Enter")
    snap = _eventually(page.get_by_role("status", name="Sessions status"), "Deleted archive 2025")
    assert "archive 2025" not in sessions.aria_snapshot(), snap
    page.context.close()


def test_approvals_inbox_allows_a_waiting_call_live(world: World) -> None:
    page = world.page("alice")
    _open(world, page, "approvals")
    inbox = page.get_by_role("list", name="Pending approvals")
    _eventually(inbox, "Nothing is waiting")
    turn: dict[str, httpx.Response] = {}

    def ask() -> None:
        with world.api("alice") as alice:
            turn["r"] = alice.post("/v1/sessions/alice:cleanup/messages", json={
                "content": "run shell: rm -rf ./precious", "stream": False})

    worker = threading.Thread(target=ask)
    worker.start()
    try:
        snap = _eventually(inbox, "rm -rf ./precious")  # arrives without a reload
        assert r'\"command\": \"rm -rf ./precious\"' in snap  # the exact arguments
        assert "HIGH" in snap or "CRITICAL" in snap
        page.get_by_role("button", name="Allow shell in alice:cleanup").click()
        _eventually(inbox, "Nothing is waiting")
    finally:
        worker.join(120)
    assert turn["r"].status_code == 200, turn["r"].text
    with world.api("admin") as admin:
        recs = admin.get("/v1/audit/events", params={"kind": "approval.decision", "tool": "shell",
                                                     "user": "alice"}).json()["events"]
    assert recs and recs[0]["decision"] == "approved" and "api:alice" in json.dumps(recs[0])
    page.context.close()


def test_audit_filter_open_and_verify(world: World) -> None:
    page = world.page("admin")
    main = _open(world, page, "audit")
    page.get_by_label("User").fill("alice")
    page.get_by_label("Kind").fill("model.response")
    page.get_by_role("button", name="Filter").click()
    table = page.get_by_role("table", name="Audit records")
    # the filtered answer: only alice's model responses (the page first listed every record)
    for _ in range(100):
        snap = table.aria_snapshot()
        rows = [line for line in snap.splitlines() if line.strip().startswith("- row ")]
        if len(rows) >= 4 and all("model.response alice" in r for r in rows[1:]):
            break
        page.wait_for_timeout(100)
    else:
        raise AssertionError(snap)
    first = re.search(r'button "(Open record \d+)"', snap)
    assert first is not None, snap
    page.get_by_role("button", name=first.group(1)).click()
    record = page.get_by_role("region", name="Audit record")
    assert r'\"kind\": \"model.response\"' in record.aria_snapshot()
    page.get_by_label("User").fill("bob")
    page.get_by_role("button", name="Filter").click()
    _eventually(page.get_by_role("status", name="Audit status"),
                '^- status "Audit status": 0 records')

    page.get_by_role("button", name="Verify the audit log").click()
    verdict = _eventually(page.get_by_role("status", name="Verify result"),
                          r"Verified: \d+ records")
    assert "FAILED" not in verdict
    assert main.locator("img").count() == 0
    page.context.close()


def test_a_second_user_sees_none_of_the_first_users_data(world: World) -> None:
    page = world.page("bob")
    seen = []
    for route, wait in (("sessions", "No sessions yet"), ("knowledge", "No documents yet"),
                        ("approvals", "Nothing is waiting")):
        main = _open(world, page, route)
        seen.append(_eventually(main, wait))
    main = _open(world, page, "sessions")
    page.get_by_role("searchbox", name="Search sessions and documents").fill("quokkas ferns")
    page.keyboard.press("Enter")
    seen.append(_eventually(page.get_by_role("status", name="Sessions status"),
                            r"\d+ results? for"))
    seen.append(main.aria_snapshot())
    main = _open(world, page, "audit")  # bob's key has no audit:read
    seen.append(_eventually(main, "audit:read"))
    text = "\n".join(seen)
    for secret in ("trip-plans", "garden-log", "blue tent", "tomatoes", "quokka", "Rottnest",
                   "onerror", "cleanup", "rm -rf"):
        assert secret not in text.replace("quokkas ferns", ""), (secret, text)
    page.context.close()


def test_every_page_fits_375px_in_dark_mode_with_named_controls(world: World) -> None:
    page = world.page("admin", viewport={"width": 375, "height": 740}, color_scheme="dark")
    with world.api("admin") as admin:
        voice = admin.get("/v1/voice").json()
    routes = ["sessions", "knowledge", "approvals", "audit", "models"]
    _open(world, page, "sessions")
    page.wait_for_load_state("networkidle")  # GET /v1/voice has answered
    nav = _eventually(page.get_by_role("navigation", name="Main"),
                      'link "Voice"' if voice["available"] else 'link "Models"')
    # push-to-talk is offered only where the server can transcribe and speak
    assert ('link "Voice"' in nav) == voice["available"], (voice, nav)
    if voice["available"]:
        routes.append("voice")
    else:
        assert voice["fix"] == "pip install 'bastion[voice]'" and voice["missing"]
    for route in routes:
        main = _open(world, page, route)
        page.wait_for_load_state("networkidle")
        snap = main.aria_snapshot()
        unnamed = [line for line in snap.splitlines()
                   if re.fullmatch(r"\s*- (button|textbox|searchbox|combobox|link|checkbox)"
                                   r"( \[[^\]]*\])?:?", line)]
        assert unnamed == [], (route, unnamed)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (route, width)
        dark = page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
        assert dark
    page.context.close()


def test_models_pull_with_progress_then_switch(world: World) -> None:
    page = world.page("admin")
    _open(world, page, "models")
    installed = page.get_by_role("list", name="Installed models")
    _eventually(installed, "No models installed")
    page.get_by_label("Model to pull (Hugging Face repo)").fill(f"{MODEL_REPO}:Q8_0")
    page.evaluate("""() => {  // record every state the bar and the status line go through
        window.seen = [];
        const bar = document.querySelector('progress');
        const status = document.querySelector('[aria-label="Models status"]');
        const note = () => window.seen.push([bar.value, bar.max, status.textContent]);
        new MutationObserver(note).observe(bar, {attributes: true});
        new MutationObserver(note).observe(status, {childList: true, characterData: true,
                                                   subtree: true});
    }""")
    page.get_by_role("button", name="Pull").click()
    status = page.get_by_role("status", name="Models status")
    _eventually(status, "Pulled Tiny-Q8_0")
    bar = page.get_by_role("progressbar", name="Pull progress")
    assert bar.get_attribute("value") == bar.get_attribute("max") == "1"
    seen = page.evaluate("window.seen")
    moving = [s for s in seen if 0 < s[0] < s[1] and re.match(r"Tiny-Q8_0.gguf: \d+%", s[2])]
    assert moving, seen  # the bar showed a part done, with the file and percentage
    _eventually(installed, 'button "Use Tiny-Q8_0"')
    page.get_by_role("button", name="Use Tiny-Q8_0").click()
    _eventually(status, "restart bastion serve")
    cfg = yaml.safe_load((world.home / "bastion.yaml").read_text())["model"]
    assert cfg["backend"] == "embedded" and cfg["name"] == "Tiny-Q8_0"
    assert cfg["path"] == str(world.home / "models" / "Tiny-Q8_0" / "Tiny-Q8_0.gguf")
    page.context.close()


def test_tasks_page_runs_pauses_and_saves_a_receipt(world: World) -> None:
    """#21 in the UI: a task listed with its schedule, run now (its run reaches done and has
    a signed receipt to save), paused and resumed; the prompt is shown as text."""
    with world.api("admin") as admin:
        r = admin.post("/v1/tasks", json={"name": "web-digest", "prompt": f"say hi {XSS_NAME}",
                                          "schedule": {"kind": "manual"}})
        assert r.status_code == 201, r.text
    page = world.page("admin")
    main = _open(world, page, "tasks")
    tasks = _eventually(page.get_by_role("table", name="Tasks"), "web-digest")
    assert "say hi <img src=x onerror=" in tasks and "manual" in tasks
    page.get_by_role("button", name="Run web-digest now").click()
    runs = _eventually(page.get_by_role("table", name="Runs"), r"web-digest done")
    run_id = re.search(r'button "Save the receipt of run (\w+)"', runs)
    assert run_id is not None, runs
    with page.expect_download() as download:
        page.get_by_role("button", name=f"Save the receipt of run {run_id.group(1)}").click()
    receipt = json.loads(Path(download.value.path()).read_text())
    assert receipt["run_id"] == run_id.group(1) and receipt["signature"]["public_key"]
    page.get_by_role("button", name="Pause web-digest").click()
    _eventually(page.get_by_role("table", name="Tasks"), r'button "Resume web-digest"')
    page.get_by_role("button", name="Resume web-digest").click()
    _eventually(page.get_by_role("table", name="Tasks"), r'button "Pause web-digest"')
    assert main.locator("img").count() == 0 and page.evaluate("window.__csp") == []


def test_a_spoken_question_on_the_voice_page_gets_a_spoken_answer(world: World,
                                                                  tmp_path: Path) -> None:
    """#20 voice, end to end in the browser: Chromium's fake microphone plays a question Piper
    spoke (the server's /v1/audio/speech); push-to-talk sends it over WS /v1/voice/ws to
    Whisper; the (scripted) model answers; Piper's audio comes back and the page plays it."""
    from bastion.security.browser._launch import require_chromium
    from bastion.voice.audio import Audio, decode, silence
    from tests.unit.voice._shared import word_accuracy

    with world.api("admin") as admin:
        if not admin.get("/v1/voice").json()["available"]:
            pytest.skip("pip install 'bastion[voice]'")
        spoken = admin.post("/v1/audio/speech", json={
            "model": "tts-1", "voice": "piper", "input": QUESTION, "response_format": "wav"})
    assert spoken.status_code == 200, spoken.text
    question = decode(spoken.content)
    assert 1.0 < question.duration < 6.0, question.duration
    # Chromium reads a 16-bit PCM WAV for its fake microphone and loops it from when the
    # device opens: a little silence (the page is still wiring the recorder), the question,
    # then more silence than the button is held for, so it is heard once and whole
    wav = tmp_path / "question.wav"
    wav.write_bytes(Audio.concat([silence(0.5, 48_000), question, silence(4.0, 48_000)],
                                 48_000).wav())
    browser = world.browser.browser_type.launch(
        executable_path=require_chromium(), headless=True,
        args=["--no-sandbox", "--use-fake-ui-for-media-stream",
              "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"])
    try:
        page = world.page("admin", browser=browser, init=PLAYED)
        _eventually(page.get_by_role("navigation", name="Main"), 'link "Voice"')
        _open(world, page, "voice")
        status = page.get_by_role("status", name="Voice status")
        talk = page.get_by_role("button", name="Hold to talk (or hold Space)")
        talk.hover()
        page.mouse.down()
        _eventually(status, "Listening")
        page.wait_for_timeout(int((0.5 + question.duration + 0.8) * 1000))
        page.mouse.up()
        done = _eventually(status, "Done|failed|Refused|fix", timeout_s=120)
        assert "Done" in done, done
        heard = page.get_by_label("You said").inner_text()
        assert re.search(r"\bBerlin\b", heard) and word_accuracy(QUESTION, heard) >= 0.8, heard
        answer = page.get_by_label("Answer").inner_text()  # the scripted model echoes it
        assert answer.startswith("echo:") and re.search(r"\bBerlin\b", answer), answer
        page.wait_for_function("window.__played.length > 0")
        played = page.evaluate("window.__played")
        assert sum(p["seconds"] for p in played) > 1.0, played  # the spoken answer, whole
        assert all(p["rate"] == 22_050 and p["context"] == "running" for p in played), played
        assert page.evaluate("window.__csp") == []
        page.context.close()
    finally:
        browser.close()

"""The web UI's cost in real Chromium against a live ``bastion serve``, in one run.

    .venv/bin/python bench/web.py [--rounds 15] [--out bench/results/web.txt]

The model is the scripted OpenAI-compatible server (``bastion.testing.openai_server``), so the
numbers are the UI's and the API's, not a model's. Measured, alternating round by round so
machine load drifts hit both sides alike:

1. First token. API: ``POST /v1/sessions/{id}/messages`` with httpx, request sent -> first
   byte of the first ``text`` event. Browser: Enter pressed in the chat page -> the first
   animation frame after the answer's first text is in the DOM (the frame it is painted in).
   Each round uses a new session made through the API. Target: browser adds <= 50 ms p50.
2. Cold-cache load of the signed-in chat page: a new browser context each round (empty HTTP
   cache; the session cookie from POST /v1/auth/login), navigation start -> the first frame
   with the message box in it (timed in the page), vs the same navigation to ``/health`` (a
   JSON page: the floor for one round trip and a document in this browser). Target: <= 300 ms.
3. Bytes the chat page transfers on a cold load (document + scripts + styles + API calls,
   from the Resource Timing ``transferSize``). Target: <= 300 KB.
4. Warm load: the same navigation again in the same context (its HTTP cache filled by the
   cold load), and the bytes that second load took from the network.

The machine's load average (1 min) is printed at the start and the end: the figures are only
comparable between runs made under a similar load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
from tests.integration.server.test_live_server import _bastion, _env, serving  # noqa: E402
from tests.integration.web.test_web_chat import CHROMIUM, _configure, _free_port  # noqa: E402

ANSWER = " ".join(["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog."] * 12)
SCRIPT = [{"when": "say the pangram", "text": ANSWER}]

FIRST_PAINT = """() => { window.__firstPaint = new Promise((resolve) => {
  const log = document.querySelector('.transcript');
  let t0 = null;
  document.querySelector('form.composer').addEventListener('submit', () => {
    t0 = performance.now();
  }, {capture: true, once: true});
  const obs = new MutationObserver(() => {
    const a = log.querySelector('article.assistant .md');
    if (t0 !== null && a && a.textContent.trim()) {
      obs.disconnect();
      requestAnimationFrame(() => resolve(performance.now() - t0));
    }
  });
  obs.observe(log, {subtree: true, childList: true, characterData: true});
}); }"""


READY = """new MutationObserver((_, obs) => {
  if (document.querySelector(READY)) {
    obs.disconnect();
    requestAnimationFrame(() => { window.__ready = performance.now(); });
  }
}).observe(document, {subtree: true, childList: true});"""


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def api_first_token(base: str, token: str) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    sid = httpx.post(f"{base}/v1/sessions", headers=headers, json={}).json()["id"]
    with httpx.Client(timeout=30) as client:
        t0 = time.perf_counter()
        with client.stream("POST", f"{base}/v1/sessions/{sid}/messages", headers=headers,
                           json={"content": "say the pangram"}) as resp:
            buf = b""
            first = None
            for chunk in resp.iter_raw():
                if first is None:
                    buf += chunk
                    if b"event: text" in buf:
                        first = (time.perf_counter() - t0) * 1000
            assert first is not None, "no text event"
            return first


def browser_first_token(page: Any, base: str, token: str) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    sid = httpx.post(f"{base}/v1/sessions", headers=headers, json={}).json()["id"]
    page.goto(f"{base}/#/chat/{sid}")
    box = page.get_by_role("textbox", name="Message")
    box.wait_for()
    page.get_by_text("Start a conversation").wait_for()
    page.evaluate(FIRST_PAINT)
    box.fill("say the pangram")
    box.press("Enter")
    ms = float(page.evaluate("window.__firstPaint"))
    page.get_by_role("button", name="Send").and_(page.locator(":enabled")).wait_for()
    return ms


def _load(page: Any, url: str, ready: str | None) -> tuple[float, int]:
    """Navigate; return (ms from navigation start to ready, bytes from the network)."""
    page.goto(url)
    if ready:
        page.wait_for_function("() => window.__ready !== undefined")
        ms = float(page.evaluate("window.__ready"))
    else:
        ms = float(page.evaluate("performance.getEntriesByType('navigation')[0].responseEnd"))
    page.wait_for_load_state("networkidle")
    size = int(page.evaluate("""() => [...performance.getEntriesByType('navigation'),
        ...performance.getEntriesByType('resource')]
        .reduce((n, e) => n + e.transferSize, 0)"""))
    return ms, size


def cold_load(browser: Any, base: str, token: str, path: str, ready: str | None,
              warm: list[tuple[float, int]] | None = None) -> tuple[float, int]:
    """Return (ms from navigation start to ready, bytes transferred) in a fresh context.

    With ``warm``, load the page once more in the same context and append that load's figures.
    """
    context = browser.new_context()
    try:
        login = context.request.post(f"{base}/v1/auth/login", data={"api_key": token},
                                     headers={"Origin": base})
        assert login.ok, login.text()
        page = context.new_page()
        if ready:  # the first frame painted with `ready` in the DOM, timed in the page
            page.add_init_script(READY.replace("READY", json.dumps(ready)))
        first = _load(page, base + path, ready)
        if warm is not None:
            page.goto("about:blank")
            warm.append(_load(page, base + path, ready))
        return first
    finally:
        context.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "web.txt")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers it started
    from playwright.sync_api import sync_playwright

    with TemporaryDirectory(prefix="bench-web-") as tmp:
        home = Path(tmp)
        init = _bastion("init", "--yes", home=home)
        assert init.returncode == 0, init.stderr
        (home / "script.json").write_text(json.dumps(SCRIPT))
        port = _free_port()
        fake = subprocess.Popen(
            [sys.executable, "-m", "bastion.testing.openai_server", "--port", str(port),
             "--script", str(home / "script.json")],
            env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
            token = _configure(home, backend="openai", name="fake-model", native_tools=True,
                               base_url=f"http://127.0.0.1:{port}/v1")
            with serving(home) as base, sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                lines = run(browser, base, token, args.rounds)
                browser.close()
        finally:
            fake.terminate()
            fake.wait(timeout=10)
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text + "\n")


def run(browser: Any, base: str, token: str, rounds: int) -> list[str]:
    load_at_start = os.getloadavg()[0]
    context = browser.new_context()
    context.request.post(f"{base}/v1/auth/login", data={"api_key": token},
                         headers={"Origin": base})
    page = context.new_page()
    api_first_token(base, token)  # warm both paths once
    browser_first_token(page, base, token)
    api_ms: list[float] = []
    ui_ms: list[float] = []
    for _ in range(rounds):
        api_ms.append(api_first_token(base, token))
        ui_ms.append(browser_first_token(page, base, token))
    context.close()
    load_ms: list[float] = []
    floor_ms: list[float] = []
    sizes: list[int] = []
    warm: list[tuple[float, int]] = []
    for _ in range(rounds):
        ms, size = cold_load(browser, base, token, "/#/chat", "#chat-input", warm)
        load_ms.append(ms)
        sizes.append(size)
        floor_ms.append(cold_load(browser, base, token, "/health", None)[0])
    added = p50(ui_ms) - p50(api_ms)
    warm_ms = [w[0] for w in warm]
    return [
        f"bench/web.py: {rounds} rounds, scripted model, Chromium {browser.version}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average (1 min) "
        f"{load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        f"({os.cpu_count()} CPUs)",
        f"first token  API (first SSE text byte)   p50 {p50(api_ms):7.1f} ms  "
        f"max {max(api_ms):7.1f} ms",
        f"first token  browser (painted)           p50 {p50(ui_ms):7.1f} ms  "
        f"max {max(ui_ms):7.1f} ms",
        f"  browser adds {added:+.1f} ms at p50 (target <= 50 ms); ratio browser/API "
        f"{p50(ui_ms) / p50(api_ms):.2f}x",
        f"cold load    chat page, signed in        p50 {p50(load_ms):7.1f} ms  "
        f"max {max(load_ms):7.1f} ms  (target <= 300 ms)",
        f"cold load    /health (floor)             p50 {p50(floor_ms):7.1f} ms;  "
        f"ratio chat/floor {p50(load_ms) / p50(floor_ms):.1f}x",
        f"transferred  chat page, cold             {max(sizes) / 1024:7.1f} KB "
        f"(target <= 300 KB)",
        f"warm load    chat page, same context     p50 {p50(warm_ms):7.1f} ms  "
        f"max {max(warm_ms):7.1f} ms;  from the network {max(w[1] for w in warm) / 1024:.1f} KB",
    ]


if __name__ == "__main__":
    main()

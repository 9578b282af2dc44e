"""Browser tools: per-action latency through bastion's gateway vs raw Playwright, same run.

Both drive Debian's chromium against the same local page (tests/integration/browser/site.py):
  (a) raw: Playwright on a plain chromium (no sandbox, no request routing), each action
      followed by ``aria_snapshot(mode="ai")`` -- what bastion returns to the model;
  (b) bastion: ``Gateway.execute`` of browser_navigate / browser_read / browser_click /
      browser_type / browser_screenshot -- audit, policy, guard, risk, approval, secrets and
      output-scan stages, chromium in bubblewrap with every request fetched by bastion under
      the egress policy and SSRF guard, DOM facts for the risk rules and password masking.
Rounds interleave (a) and (b) so load drift hits both. Printed: median ms per action of each
and the ratio b/a, plus the browser start time of each.

    .venv/bin/python bench/browser.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BASTION_HOME", tempfile.mkdtemp(prefix="bastion-bench-browser-"))

from tests.integration.browser.site import Site  # noqa: E402

from bastion.app import build_app  # noqa: E402
from bastion.config.model import BrowserConfig, Config, EgressConfig, MemoryConfig  # noqa: E402
from bastion.messages import ToolCall  # noqa: E402
from bastion.security.approval import AllowApprover  # noqa: E402
from bastion.security.browser._launch import ARGS, require_chromium  # noqa: E402
from bastion.testing import ScriptedModel  # noqa: E402

ACTIONS = ["navigate", "read", "click", "type", "screenshot"]


def ref(text: str, role: str, name: str) -> str:
    m = re.search(rf'- {role} "{re.escape(name)}"[^\n]*\[ref=([A-Za-z0-9]+)\]', text)
    if not m:
        raise SystemExit(f"no {role} {name!r} in the snapshot:\n{text}")
    return m.group(1)


async def raw_round(page: Any, url: str, times: dict[str, list[float]]) -> None:
    async def timed(name: str, coro: Any) -> Any:
        t = time.perf_counter()
        out = await coro
        times[name].append((time.perf_counter() - t) * 1000)
        return out

    async def goto_snap() -> str:
        await page.goto(f"{url}/form", wait_until="load")
        return str(await page.aria_snapshot(mode="ai"))

    text = await timed("navigate", goto_snap())
    text = await timed("read", page.aria_snapshot(mode="ai"))

    async def fill_snap() -> str:
        await page.locator(f"aria-ref={ref(text, 'textbox', 'Nickname')}").fill("Pingu")
        return str(await page.aria_snapshot(mode="ai"))

    text = await timed("type", fill_snap())

    async def click_snap() -> str:
        await page.locator(f"aria-ref={ref(text, 'button', 'Save')}").click()
        await page.wait_for_load_state("load")
        return str(await page.aria_snapshot(mode="ai"))

    await timed("click", click_snap())
    await timed("screenshot", page.screenshot(type="png"))


async def bastion_round(app: Any, url: str, times: dict[str, list[float]]) -> None:
    async def timed(name: str, tool: str, **args: Any) -> str:
        t = time.perf_counter()
        res = await app.gateway.execute(ToolCall(tool, args), session_id="bench")
        times[name].append((time.perf_counter() - t) * 1000)
        if not res.ok:
            raise SystemExit(f"{tool} failed: {res.text}")
        return str(res.text)

    text = await timed("navigate", "browser_navigate", url=f"{url}/form")
    text = await timed("read", "browser_read")
    text = await timed("type", "browser_type", ref=ref(text, "textbox", "Nickname"),
                       text="Pingu")
    await timed("click", "browser_click", ref=ref(text, "button", "Save"))
    await timed("screenshot", "browser_screenshot")


async def main(rounds: int) -> None:
    from playwright.async_api import async_playwright

    site = Site()
    config = Config(memory=MemoryConfig(enabled=False), browser=BrowserConfig(
        enabled=True, egress=EgressConfig(cidrs=["127.0.0.1/32"], ports=[site.port])))
    config.intelligence.enabled = False
    app = build_app(config, model=ScriptedModel(), approver=AllowApprover())
    assert app.browser is not None
    raw: dict[str, list[float]] = {a: [] for a in ACTIONS}
    ours: dict[str, list[float]] = {a: [] for a in ACTIONS}
    async with async_playwright() as pw:
        t = time.perf_counter()
        browser = await pw.chromium.launch(executable_path=require_chromium(), args=ARGS[:6])
        raw_start = (time.perf_counter() - t) * 1000
        page = await (await browser.new_context()).new_page()
        t = time.perf_counter()
        await app.browser._ensure_browser()
        ours_start = (time.perf_counter() - t) * 1000
        for i in range(rounds + 1):  # the first round warms both up and is not counted
            r: dict[str, list[float]] = {a: [] for a in ACTIONS}
            o: dict[str, list[float]] = {a: [] for a in ACTIONS}
            await raw_round(page, site.url, r)
            await bastion_round(app, site.url, o)
            if i:
                for a in ACTIONS:
                    raw[a] += r[a]
                    ours[a] += o[a]
        await browser.close()
    sandboxed = app.browser.sandboxed
    await app.aclose()
    site.close()
    print(f"browser start: raw {raw_start:.0f} ms, bastion {ours_start:.0f} ms "
          f"(sandboxed={sandboxed})")
    print(f"{'action':<12}{'raw ms':>10}{'bastion ms':>12}{'ratio':>8}   ({rounds} rounds, median)")
    total_r = total_o = 0.0
    for a in ACTIONS:
        mr, mo = statistics.median(raw[a]), statistics.median(ours[a])
        total_r, total_o = total_r + mr, total_o + mo
        print(f"{a:<12}{mr:>10.1f}{mo:>12.1f}{mo / mr:>8.2f}")
    print(f"{'all five':<12}{total_r:>10.1f}{total_o:>12.1f}{total_o / total_r:>8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    asyncio.run(main(parser.parse_args().rounds))

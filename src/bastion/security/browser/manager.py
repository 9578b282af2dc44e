"""Browser sessions: one isolated chromium context per agent session, under bastion's rules.

One chromium process (Playwright, Debian's chromium, inside bubblewrap where it works) serves
every session; each agent session gets its own ``BrowserContext`` (no shared cookies, storage
or cache). Sessions expire when idle or after a number of actions, their count is capped, and
all of them close with the app. The manager is what the gateway lends tools as
``ToolContext.browser``; tools never see Playwright or the credentials it types.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from bastion._extras import require
from bastion.config import paths
from bastion.errors import PolicyDenied, ToolError
from bastion.security.browser import _snapshot
from bastion.security.browser._launch import (
    ARGS,
    NO_WEBRTC,
    SANDBOX_FIX,
    bwrap_problem,
    require_chromium,
    sandbox_wrapper,
)
from bastion.security.browser._network import RequestBroker, SessionNet, check_url, norm_url
from bastion.security.browser._snapshot import Element
from bastion.security.browser.preauth import Site, login
from bastion.security.recorder import AuditRecorder
from bastion.tools.builtin.web import DirectFetcher


class Resolver(Protocol):
    """Turns a ``secret://`` reference into its value (and registers it for redaction)."""

    def resolve(self, ref: str) -> str:
        """Return the value ``ref`` points at."""
        ...


@dataclass(slots=True)
class BrowserSettings:
    """How sessions are run (from ``browser:`` in bastion.yaml)."""

    executable: Path | None = None
    sandbox: str = "auto"  # auto | bubblewrap | none
    max_sessions: int = 4
    idle_timeout_s: float = 600.0
    max_actions: int = 200
    action_timeout_s: float = 15.0
    max_response_bytes: int = 20_000_000
    snapshot_chars: int = 12_000


@dataclass(eq=False)
class BrowserSession:
    """One agent session's browser context and what bastion tracks about it."""

    id: str | None
    context: Any
    page: Any
    net: SessionNet
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    actions: int = 0
    elements: dict[str, Element] = field(default_factory=dict)
    visited: set[str] = field(default_factory=set)
    logged_in: set[str] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def info(self) -> dict[str, Any]:
        """Return what ``bastion browser sessions`` shows."""
        return {"session_id": self.id, "url": self.page.url if self.page else None,
                "actions": self.actions, "created": self.created,
                "idle_s": round(time.monotonic() - self.last_used, 1),
                "logged_in": sorted(self.logged_in), "requests": self.net.requests}


class BrowserManager:
    """Owns the chromium process and the per-session contexts (implements ``BrowserAccess``).

    Args:
        settings: Limits and launch options.
        fetcher: The egress policy and SSRF guard every browser request passes.
        workspace: Where screenshots are written by the tools and downloads land.
        sites: Pre-authentication sites.
        resolver: Resolves the sites' ``secret://`` references at login time.
        audit: Where session, network and login events are recorded.
        runtime_dir: Where the bubblewrap launcher script is written (default: the data
            directory ``browser``; never the workspace, which sandboxed code can change).

    """

    def __init__(self, settings: BrowserSettings, *, fetcher: DirectFetcher, workspace: Path,
                 sites: Iterable[Site] = (), resolver: Resolver | None = None,
                 audit: AuditRecorder | None = None, runtime_dir: Path | None = None) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.workspace = workspace
        self.sites = list(sites)
        self.resolver = resolver
        self.audit = audit
        # where the bubblewrap launcher is written: never the workspace, which sandboxes write
        self.runtime_dir = runtime_dir
        self.sandboxed: bool | None = None  # known after launch
        self.sandbox_problem: str | None = None
        self._sessions: dict[str | None, BrowserSession] = {}
        self._pw: Any = None
        self._browser: Any = None
        self._broker: RequestBroker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock: asyncio.Lock | None = None
        self._wrapper: Path | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    async def _ensure_browser(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # Playwright objects belong to the loop that made them
            self._forget()
            self._loop, self._start_lock = loop, asyncio.Lock()
        assert self._start_lock is not None
        async with self._start_lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            api = require("playwright.async_api", extra="browser", feature="the browser tools")
            exe = require_chromium(self.settings.executable)
            launcher = exe
            if self.settings.sandbox != "none":
                problem = bwrap_problem()
                if problem is not None:  # fail closed: never a page on the host unasked
                    self.sandbox_problem = problem
                    self._record("browser.refused", decision="denied",
                                 detail={"sandbox": self.settings.sandbox, "why": problem})
                    raise ToolError(
                        f"chromium is not started: no sandbox works here ({problem})",
                        fix=SANDBOX_FIX)
                self._wrapper = sandbox_wrapper(exe, self.runtime_dir or paths.data_dir("browser"))
                launcher = str(self._wrapper)
            else:
                self.sandbox_problem = "browser.sandbox is none (unsafe opt-in)"
            self.sandboxed = launcher != exe
            if self._pw is None:
                self._pw = await api.async_playwright().start()
            try:
                self._browser = await self._pw.chromium.launch(
                    executable_path=launcher, args=ARGS, headless=True, timeout=30_000)
            except Exception as exc:
                raise ToolError(f"chromium did not start: {str(exc).splitlines()[0]}",
                                fix="run `bastion doctor`") from exc
            self._broker = RequestBroker(
                self.fetcher, max_bytes=self.settings.max_response_bytes,
                timeout_s=self.settings.action_timeout_s, on_block=self._record_block)
            self._record("browser.started", detail={"sandboxed": self.sandboxed,
                                                    "why_not": self.sandbox_problem})
            return self._browser

    def _forget(self) -> None:
        """Drop state of another (closed) event loop; its processes die with their driver."""
        self._sessions.clear()
        self._pw = self._browser = self._broker = None

    async def aclose(self) -> None:
        """Close every session and the browser (app shutdown)."""
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            self._forget()
            return
        for sid in list(self._sessions):
            await self._close(sid, "shutdown")
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.close()
        if self._pw is not None:
            with contextlib.suppress(Exception):
                await self._pw.stop()
        if self._broker is not None:
            await self._broker.aclose()
        if self._wrapper is not None:
            self._wrapper.unlink(missing_ok=True)
        self._pw = self._browser = self._broker = self._wrapper = None

    # ---- sessions ------------------------------------------------------------------------
    def sessions(self) -> list[dict[str, Any]]:
        """Describe the open sessions."""
        return [s.info() for s in self._sessions.values()]

    def _expired(self, s: BrowserSession) -> str | None:
        idle = time.monotonic() - s.last_used
        if idle > self.settings.idle_timeout_s:
            return f"idle for {idle:.0f}s (browser.idle_timeout_s={self.settings.idle_timeout_s:g})"
        if s.actions >= self.settings.max_actions:
            return f"{s.actions} actions (browser.max_actions={self.settings.max_actions})"
        return None

    async def expire(self) -> list[str | None]:
        """Close every expired session; return their ids."""
        gone = []
        for sid, s in list(self._sessions.items()):
            why = self._expired(s)
            if why is not None and not s.lock.locked():
                await self._close(sid, f"expired: {why}")
                gone.append(sid)
        return gone

    async def _session(self, session_id: str | None) -> tuple[BrowserSession, str]:
        """Return the session (a new one when absent or expired) and a note for the model."""
        note = ""
        existing = self._sessions.get(session_id)
        if existing is not None:
            why = self._expired(existing)
            if why is None:
                return existing, note
            await self._close(session_id, f"expired: {why}")
            note = f"[the previous browser session expired ({why}); this is a new one]\n"
        await self.expire()
        if len(self._sessions) >= self.settings.max_sessions:
            raise ToolError(
                f"too many browser sessions open ({len(self._sessions)})",
                fix="close one (browser_close_session, `bastion browser close`) or raise "
                    "browser.max_sessions")
        browser = await self._ensure_browser()
        context = await browser.new_context(
            service_workers="block", accept_downloads=False, java_script_enabled=True,
            viewport={"width": 1280, "height": 900})
        context.set_default_timeout(self.settings.action_timeout_s * 1000)
        await context.add_init_script(NO_WEBRTC)  # with the launch flags: no UDP around bastion
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(session_id))[:64]
        net = SessionNet(self.workspace, f"downloads/{safe}")
        broker = self._broker
        assert broker is not None

        async def route(route: Any, request: Any) -> None:
            await broker.handle(route, request, net, session_id)

        await context.route("**/*", route)
        page = await context.new_page()
        session = BrowserSession(session_id, context, page, net)
        self._sessions[session_id] = session
        self._record("browser.session_started", session_id=session_id)
        return session, note

    async def _close(self, session_id: str | None, reason: str) -> bool:
        s = self._sessions.pop(session_id, None)
        if s is None:
            return False
        with contextlib.suppress(Exception):
            await s.context.close()
        self._record("browser.session_closed", session_id=session_id,
                     detail={"reason": reason, "actions": s.actions})
        return True

    # ---- facts for the risk rules (synchronous, from the last snapshot) ------------------
    def element(self, session_id: str | None, ref: str) -> Element | None:
        """Return what the last snapshot of the session said about ``ref``."""
        s = self._sessions.get(session_id)
        return s.elements.get(ref) if s is not None else None

    async def inspect(self, session_id: str | None, ref: str) -> Element | None:
        """Read the live DOM facts of ``ref`` into the session's cache (before risk rules)."""
        s = self._sessions.get(session_id)
        known = s.elements.get(ref) if s is not None else None
        if s is None or known is None:
            return None
        live = await _snapshot.element_facts(s.page, ref, self.settings.action_timeout_s * 1000)
        if live is not None:
            known.facts = live
        return known

    def current_url(self, session_id: str | None) -> str | None:
        """Return the URL of the session's page."""
        s = self._sessions.get(session_id)
        return str(s.page.url) if s is not None else None

    def download_flag(self, session_id: str | None, url: str) -> str | None:
        """Return why ``url`` serves a risky download its URL does not show, or None."""
        s = self._sessions.get(session_id)
        return s.net.flagged(url) if s is not None else None

    def visited(self, session_id: str | None) -> set[str]:
        """Return the hosts this session has opened."""
        s = self._sessions.get(session_id)
        return set(s.visited) if s is not None else set()

    # ---- actions (the BrowserAccess seam) ------------------------------------------------
    async def navigate(self, session_id: str | None, url: str) -> str:
        """Open ``url`` (logging in first when it belongs to a configured site)."""
        check_url(self.fetcher, url)  # clear refusal before anything is started
        s, note = await self._session(session_id)
        async with s.lock:
            self._touch(s)
            s.net.clear(url)  # judged by the rules with its download flag, if it has one
            host = (urlsplit(url).hostname or "").lower()
            site = self._site_for(host)
            if site is not None and site.name not in s.logged_in:
                await self._login(s, site)
            try:
                await s.page.goto(url, wait_until="load")
            except Exception as exc:
                raise ToolError(f"could not open {url}: {_first_line(exc)}") from exc
            return note + await self._after(s)

    async def click(self, session_id: str | None, ref: str) -> str:
        """Click element ``ref`` of the last snapshot."""
        s, note = await self._session(session_id)
        async with s.lock:
            self._touch(s)
            locator = await self._live(s, ref)
            href = s.elements[ref].facts.get("href")
            if isinstance(href, str) and href:
                s.net.clear(href)
            try:
                await locator.click(timeout=self.settings.action_timeout_s * 1000)
            except Exception as exc:
                raise ToolError(f"could not click {ref}: {_first_line(exc)}") from exc
            return note + await self._after(s)

    async def type(self, session_id: str | None, ref: str, text: str, submit: bool) -> str:
        """Fill ``text`` into element ``ref``; refuse password and other secret fields."""
        s, note = await self._session(session_id)
        async with s.lock:
            self._touch(s)
            locator = await self._live(s, ref)
            why = s.elements[ref].secret_reason()
            if why is not None:
                raise PolicyDenied(
                    f"typing into {ref} is refused: {why}. bastion never lets the agent type "
                    "passwords or secrets; configured sites are logged in by bastion itself",
                    fix="ask the user to add the site under browser.sites with secret:// "
                        "credentials")
            try:
                await locator.fill(text, timeout=self.settings.action_timeout_s * 1000)
                if submit:
                    await locator.press("Enter")
            except Exception as exc:
                # from None: it can quote the typed text (a password)
                raise ToolError(f"could not type into {ref}: {_first_line(exc)}") from None
            return note + await self._after(s)

    async def read(self, session_id: str | None) -> str:
        """Return the page's snapshot."""
        s, note = await self._session(session_id)
        async with s.lock:
            self._touch(s)
            return note + await self._after(s, settle=False)

    async def screenshot(self, session_id: str | None, full_page: bool) -> bytes:
        """Return a PNG of the page."""
        s, _note = await self._session(session_id)
        async with s.lock:
            self._touch(s)
            data: bytes = await s.page.screenshot(type="png", full_page=full_page,
                                                  timeout=self.settings.action_timeout_s * 1000)
            return data

    async def close(self, session_id: str | None) -> bool:
        """Close the session's context (cookies, storage and pages go with it)."""
        s = self._sessions.get(session_id)
        if s is None:
            return False
        async with s.lock:
            return await self._close(session_id, "closed by request")

    # ---- helpers -------------------------------------------------------------------------
    def _touch(self, s: BrowserSession) -> None:
        s.actions += 1
        s.last_used = time.monotonic()

    async def _live(self, s: BrowserSession, ref: str) -> Any:
        """Return the locator of ``ref`` after checking it is still the element the model saw."""
        known = s.elements.get(ref)
        if known is None:
            raise ToolError(f"no element {ref} on the current page",
                            fix="call browser_read and use a ref from its snapshot")
        timeout = self.settings.action_timeout_s * 1000
        live = await _snapshot.element_facts(s.page, ref, timeout)
        seen_tag = known.facts.get("tag")
        if live is None or (seen_tag is not None and live.get("tag") != seen_tag):
            raise ToolError(f"element {ref} is gone (the page changed)",
                            fix="call browser_read again and use a fresh ref")
        known.facts = live  # the guard below checks what is there now
        return s.page.locator(f"aria-ref={ref}")

    async def _settle(self, s: BrowserSession) -> None:
        timeout = self.settings.action_timeout_s * 1000
        for _ in range(8):  # a redirect page replaces itself with its target (see _network)
            with contextlib.suppress(Exception):
                await s.page.wait_for_load_state("load", timeout=timeout)
            target, s.net.redirect_target = s.net.redirect_target, None
            if target is None:
                return
            want = norm_url(target)
            with contextlib.suppress(Exception):
                await s.page.wait_for_url(lambda u, w=want: norm_url(str(u)) == w,
                                          wait_until="load", timeout=timeout)

    async def _after(self, s: BrowserSession, *, settle: bool = True) -> str:
        """Snapshot the page and report what the network did."""
        if settle:
            await self._settle(s)
        host = (urlsplit(s.page.url).hostname or "").lower()
        if host:
            s.visited.add(host)
        timeout = self.settings.action_timeout_s * 1000
        try:
            title, text, elements = await _snapshot.take(s.page, timeout_ms=timeout)
        except Exception as exc:
            raise ToolError(f"could not read the page: {_first_line(exc)}") from exc
        s.elements = elements
        blocked, downloads = s.net.drain()
        head = [f"Page: {title or '(no title)'} -- {s.page.url}"]
        for b in blocked[:5]:
            head.append(f"[bastion blocked {b.url}: {b.reason}]")
        if len(blocked) > 5:
            head.append(f"[... and {len(blocked) - 5} more blocked requests]")
        for d in downloads:
            head.append(f"[downloaded {d.path} ({d.size} bytes)]")
            self._record("browser.download", session_id=s.id,
                         detail={"path": d.path, "bytes": d.size})
        cap = self.settings.snapshot_chars
        if len(text) > cap:
            text = text[:cap] + f"\n[... snapshot truncated at {cap} characters]"
        return "\n".join(head) + "\n" + text

    def _site_for(self, host: str) -> Site | None:
        for site in self.sites:
            if any(host == d or host.endswith("." + d) for d in site.domains):
                return site
        return None

    async def _login(self, s: BrowserSession, site: Site) -> None:
        if self.resolver is None:
            raise ToolError(f"cannot log in to {site.name}: no secret resolver")
        ok = False
        try:
            await login(s.page, site, self.resolver, timeout_s=self.settings.action_timeout_s,
                        settle=lambda: self._settle(s))
            ok = True
        finally:
            self._record("browser.preauth", session_id=s.id,
                         decision="ok" if ok else "failed",
                         detail={"site": site.name, "login_url": site.login_url,
                                 "username_ref": site.username if site.username.startswith(
                                     "secret://") else "(plain)"})
        s.logged_in.add(site.name)

    def _record(self, kind: str, **fields: Any) -> None:
        if self.audit is not None:
            with contextlib.suppress(Exception):
                self.audit.record(kind, actor="browser", **fields)

    def _record_block(self, session_id: str | None, url: str, reason: str) -> None:
        self._record("browser.blocked", session_id=session_id, decision="denied",
                     detail={"url": url, "reason": reason})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

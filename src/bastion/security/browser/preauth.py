"""Pre-authentication: bastion logs in to a configured site before the agent acts on it.

The username and password are ``secret://`` references resolved (env, OpenBao/Vault, sops)
only here, at injection time, typed straight into the login form by Playwright and dropped.
The resolver registers every value with the redactor, so even a page that echoes them back
reaches the model, the audit log and the logs masked. The model never sees the login page.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bastion.errors import ToolError

_USER_FIELDS = (
    "input[autocomplete~=username]", "input[type=email]",
    "input[name*=user i]", "input[name*=login i]", "input[name*=email i]",
    "input[id*=user i]", "input[id*=login i]", "input[id*=email i]",
    "input[type=text]", "input:not([type])",
)
_SUBMITS = ("button[type=submit]", "input[type=submit]", "button:not([type])",
            "input[type=image]")


class _Resolver(Protocol):
    def resolve(self, ref: str) -> str: ...


@dataclass(slots=True)
class Site:
    """A configured login (``browser.sites`` in bastion.yaml)."""

    name: str
    domains: list[str]
    login_url: str
    username: str
    password: str
    username_selector: str | None = None
    password_selector: str | None = None
    submit_selector: str | None = None
    success_selector: str | None = None


async def _first_visible(scope: Any, selectors: tuple[str, ...]) -> Any | None:
    for sel in selectors:
        loc = scope.locator(sel)
        count = await loc.count()
        for i in range(count):
            item = loc.nth(i)
            if await item.is_visible():
                return item
    return None


async def login(page: Any, site: Site, resolver: _Resolver, *, timeout_s: float,
                settle: Callable[[], Awaitable[None]]) -> None:
    """Open the site's login page, fill the credentials, submit and check it worked.

    Raises:
        ToolError: the form was not found or the login did not succeed (no values in it).

    """
    timeout = timeout_s * 1000
    try:
        await page.goto(site.login_url, wait_until="load", timeout=timeout)
    except Exception:
        # from None: it could quote the credentials typed
        raise ToolError(f"pre-authentication for {site.name}: cannot open its login page",
                        fix="check browser.sites login_url and browser.egress") from None
    await settle()
    if site.password_selector:
        pw_field = page.locator(site.password_selector).first
    else:
        pw_field = await _first_visible(page, ("input[type=password]",))
    if pw_field is None or not await pw_field.count():
        raise ToolError(f"pre-authentication for {site.name}: no password field on "
                        f"{site.login_url}", fix="set browser.sites password_selector")
    form = pw_field.locator("xpath=ancestor::form[1]")
    scope = form if await form.count() else page
    if site.username_selector:
        user_field = page.locator(site.username_selector).first
    else:
        user_field = await _first_visible(scope, _USER_FIELDS)
    # Resolved here, used once, never stored, logged or returned.
    username = resolver.resolve(site.username) if site.username.startswith("secret://") \
        else site.username
    if user_field is not None and await user_field.count():
        await user_field.fill(username, timeout=timeout)
    elif site.username:
        raise ToolError(f"pre-authentication for {site.name}: no username field",
                        fix="set browser.sites username_selector")
    await pw_field.fill(resolver.resolve(site.password), timeout=timeout)
    del username
    if site.submit_selector:
        await page.locator(site.submit_selector).first.click(timeout=timeout)
    else:
        button = await _first_visible(scope, _SUBMITS)
        if button is not None:
            await button.click(timeout=timeout)
        else:
            await pw_field.press("Enter")
    await settle()
    if site.success_selector:
        try:
            await page.locator(site.success_selector).first.wait_for(timeout=timeout)
        except Exception:
            # from None: it could quote the credentials typed
            raise ToolError(f"pre-authentication for {site.name} failed (no "
                            f"{site.success_selector} after login)",
                            fix="check the credentials' secret:// references") from None
    else:
        still = await _first_visible(page, ("input[type=password]",))
        if still is not None:
            with contextlib.suppress(Exception):
                await still.fill("")  # never leave the password in the page
            raise ToolError(f"pre-authentication for {site.name} failed (the login form is "
                            "still shown)", fix="check the credentials' secret:// references")

"""The six browser tools.

They act only through ``ctx.browser`` -- the session manager the
gateway lends them -- never Playwright or ``security`` directly; the manager enforces the
network policy, pre-authentication and the password-field guard, the gateway's risk rules
decide which actions a human approves first.
"""

from __future__ import annotations

import time

from bastion.errors import ToolError
from bastion.tools.base import BrowserAccess, Risk, ToolContext, ToolOutput, tool
from bastion.tools.builtin._paths import write_new_file
from bastion.tools.registry import Toolset


def _browser(ctx: ToolContext) -> BrowserAccess:
    if ctx.browser is None:
        raise ToolError("the browser is not available in this context",
                        fix="enable it with browser.enabled: true and pip install "
                            "'bastion[browser]'")
    return ctx.browser


@tool(risk=Risk.MEDIUM, egress=True)
async def browser_navigate(ctx: ToolContext, url: str) -> ToolOutput:
    """Open a web page in this session's browser and return its accessibility snapshot.

    Args:
        ctx: The call's context (the gateway's browser sessions).
        url: The http(s) address to open.

    """
    text = await _browser(ctx).navigate(ctx.session_id, url)
    return ToolOutput(text)


@tool(risk=Risk.LOW, egress=True)
async def browser_click(ctx: ToolContext, ref: str) -> ToolOutput:
    """Click an element of the current page by its ref (like e12) from the last snapshot.

    Args:
        ctx: The call's context (the gateway's browser sessions).
        ref: The element's ref, e.g. "e12", as shown by browser_read.

    """
    return ToolOutput(await _browser(ctx).click(ctx.session_id, ref.strip()))


@tool(risk=Risk.MEDIUM, egress=True)
async def browser_type(ctx: ToolContext, ref: str, text: str, submit: bool = False) -> ToolOutput:
    """Type text into a field of the current page (never passwords: those are refused).

    Args:
        ctx: The call's context (the gateway's browser sessions).
        ref: The field's ref, e.g. "e5", from the last snapshot.
        text: What to type (replaces the field's content).
        submit: Press Enter afterwards (submits the form).

    """
    return ToolOutput(await _browser(ctx).type(ctx.session_id, ref.strip(), text, submit))


@tool(risk=Risk.LOW, egress=False)
async def browser_read(ctx: ToolContext) -> ToolOutput:
    """Read the current page as an accessibility tree with element refs to click or type into.

    Args:
        ctx: The call's context (the gateway's browser sessions).

    """
    return ToolOutput(await _browser(ctx).read(ctx.session_id))


@tool(risk=Risk.LOW, egress=False)
async def browser_screenshot(ctx: ToolContext, full_page: bool = False) -> ToolOutput:
    """Save a PNG screenshot of the current page in the workspace and return its path.

    Args:
        ctx: The call's context (the gateway's browser sessions).
        full_page: Capture the whole scrollable page, not only the visible part.

    """
    png = await _browser(ctx).screenshot(ctx.session_id, full_page)
    name = f"screenshot-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}.png"
    # the workspace is the sandboxes' too: never follow a link planted there (O_NOFOLLOW walk)
    rel = write_new_file(ctx.workspace, "screenshots", name, png)
    return ToolOutput(f"saved {rel} ({len(png)} bytes)",
                      data={"path": str(rel), "bytes": len(png)})


@tool(risk=Risk.LOW, egress=False)
async def browser_close_session(ctx: ToolContext) -> ToolOutput:
    """Close this session's browser (its cookies, logins and pages are discarded).

    Args:
        ctx: The call's context (the gateway's browser sessions).

    """
    closed = await _browser(ctx).close(ctx.session_id)
    return ToolOutput("browser session closed" if closed else "no browser session was open")


#: The toolset's name: the app removes the whole set when ``browser.enabled`` is off.
BROWSER_TOOLSET = "browser"


def browser_tools() -> Toolset:
    """Return the six browser tools as one toolset (the ``bastion.tools`` entry point)."""
    return Toolset(BROWSER_TOOLSET, (browser_navigate, browser_click, browser_type,
                                     browser_read, browser_screenshot, browser_close_session))


__all__ = ["BROWSER_TOOLSET", "browser_tools"]

"""Response headers that keep the API's pages out of other sites' frames, and the static pages.

Every response gets ``X-Frame-Options: DENY``, ``Content-Security-Policy: frame-ancestors
'none'`` (unless the route set a fuller policy that says the same), ``Referrer-Policy:
no-referrer`` and ``X-Content-Type-Options: nosniff``: no other origin can frame the approvals
page and trick a click on "Allow" (clickjacking), and no URL leaks in a ``Referer``.
"""

from __future__ import annotations

from importlib import resources

from starlette.datastructures import MutableHeaders
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The static pages' policy: their own inline script and style, nothing else, never framed.
PAGE_CSP = ("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_ALWAYS = {"x-frame-options": "DENY", "referrer-policy": "no-referrer",
           "x-content-type-options": "nosniff"}


def static_page(name: str) -> HTMLResponse:
    """Return the page ``name`` of ``bastion.server.routes`` (it carries no data)."""
    html = resources.files("bastion.server.routes").joinpath(name).read_text()
    return HTMLResponse(html, headers={"Cache-Control": "no-store",
                                       "Content-Security-Policy": PAGE_CSP})


class SecurityHeaders:
    """ASGI middleware: add the anti-framing and referrer headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to the response's start message."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in _ALWAYS.items():
                    headers[key] = value
                if "content-security-policy" not in headers:
                    headers["content-security-policy"] = "frame-ancestors 'none'"
            await send(message)

        await self.app(scope, receive, send_with_headers)

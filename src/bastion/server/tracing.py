"""Accept a W3C ``traceparent`` on every API request (when traces are on).

A turn started by a request whose client sent ``traceparent`` becomes a span of the client's
trace; without the header it is the root of its own. Pure ASGI, so streamed responses (SSE,
WebSocket) run inside the request's context too.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from bastion import telemetry


class TraceContext:
    """Make the incoming request's trace context current while the request is served."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, inside its caller's trace when it sent one."""
        if not telemetry.enabled() or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"traceparent", b"tracestate", b"baggage")}
        with telemetry.remote_parent(carrier):
            await self.app(scope, receive, send)

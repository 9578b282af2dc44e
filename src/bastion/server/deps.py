"""Dependencies shared by every route module: the bearer token check and the App.

Usage in a route module::

    from fastapi import APIRouter
    from bastion.server.deps import BastionApp

    router = APIRouter(prefix="/v1/things", tags=["things"])

    @router.get("")
    async def things(app: BastionApp) -> dict: ...

``create_app`` adds ``require_token`` to every ``router`` it includes, so listing it again
is harmless (FastAPI runs it once per request) but not needed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, WebSocketException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from bastion.app import App
from bastion.errors import AuthError
from bastion.server.errors import ApiError, error_response

TOKEN_FIX = ("send the header 'Authorization: Bearer <token>'; see: "
             "bastion config get api.token --reveal")


class _Bearer(HTTPBearer):
    """HTTPBearer that also works on WebSocket routes; only declares the OpenAPI scheme."""

    async def __call__(
        self, conn: HTTPConnection
    ) -> HTTPAuthorizationCredentials | None:
        return None


_bearer = _Bearer(
    auto_error=False,
    scheme_name="bearer",
    description="The API token from `bastion init` (`bastion config get api.token --reveal`).",
)


def get_app(conn: HTTPConnection) -> App:
    """Return the bastion :class:`~bastion.app.App` this API serves."""
    app: App | None = getattr(conn.app.state, "bastion", None)
    if app is None:
        raise ApiError(503, "bastion is still starting", code="starting", fix="retry in a moment")
    return app


WS_SUBPROTOCOL = "bastion"
WS_TOKEN_PREFIX = "bastion.token."


def ws_subprotocols(conn: HTTPConnection) -> list[str]:
    """Return the subprotocols a WebSocket client offered (``Sec-WebSocket-Protocol``)."""
    offered = conn.headers.get("sec-websocket-protocol") or ""
    return [p.strip() for p in offered.split(",") if p.strip()]


def ws_accept_subprotocol(conn: HTTPConnection) -> str | None:
    """Return the subprotocol to accept: ``bastion`` when offered (a browser's token way)."""
    return WS_SUBPROTOCOL if WS_SUBPROTOCOL in ws_subprotocols(conn) else None


def _presented_token(conn: HTTPConnection) -> str | None:
    """Return the token the request carries.

    HTTP: only ``Authorization: Bearer``. WebSocket (browsers cannot set headers on one):
    also the subprotocol ``bastion.token.<token>`` (offered with ``bastion``), and, for old
    clients, ``?token=`` (the API token is redacted from every log line).
    """
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    if conn.scope["type"] != "websocket":
        return None
    for proto in ws_subprotocols(conn):
        if proto.startswith(WS_TOKEN_PREFIX):
            return proto[len(WS_TOKEN_PREFIX):] or None
    return conn.query_params.get("token") or None


def token_error(conn: HTTPConnection) -> Exception | None:
    """Return the error for a request without the right token, or ``None`` if it may pass.

    The token is compared in constant time. No configured token refuses everything (503).
    """
    try:
        app = get_app(conn)
    except ApiError as exc:
        return exc
    expected = app.config.api.token
    if expected is None or not expected.get_secret_value():  # an empty one matches nothing
        return ApiError(
            503, "the API has no token configured, so every request is refused",
            code="no_token", fix="bastion init",
        )
    given = _presented_token(conn)
    ok = given is not None and hmac.compare_digest(
        given.encode("utf-8"), expected.get_secret_value().encode("utf-8")
    )
    if ok:
        return None
    what = "missing" if given is None else "wrong"
    return AuthError(f"{what} API token", fix=TOKEN_FIX)


async def require_token(
    conn: HTTPConnection,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse the request unless it carries the configured API token.

    HTTP: ``Authorization: Bearer <token>``. WebSocket: the same header, the subprotocol
    ``bastion.token.<token>``, or ``?token=``.
    Failures are a 401 JSON error (HTTP) or a close with code 1008 (WebSocket).
    ``create_app`` also checks the token before a request body is read (``TokenGate``);
    this dependency declares the scheme in the OpenAPI schema and checks again.
    """
    error = token_error(conn)
    if error is None:
        return
    if conn.scope["type"] == "websocket":
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION,
                                 reason="bad or missing token")
    raise error


class TokenGate:
    """ASGI middleware: refuse a request without the token before anything reads its body.

    Only paths of public routes (``public_router``) pass without a token; unknown paths are
    refused too, so the API does not reveal which routes exist.
    """

    def __init__(self, app: ASGIApp, public: Callable[[str], bool]) -> None:
        self.app = app
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the token of HTTP and WebSocket requests to non-public paths."""
        if scope["type"] not in ("http", "websocket") or self.public(scope["path"]):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        error = token_error(conn)
        if error is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await WebSocketClose(status.WS_1008_POLICY_VIOLATION, "bad or missing token")(
                scope, receive, send)
            return
        if isinstance(error, ApiError):
            status_code, code, fix = error.status, error.code, error.fix
            message = error.message
        else:
            assert isinstance(error, AuthError)
            status_code, code, fix, message = 401, "AuthError", error.fix, error.message
        headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
        response = error_response(conn, status_code, message, code=code, fix=fix,
                                  headers=headers)
        await response(scope, receive, send)


BastionApp = Annotated[App, Depends(get_app)]
"""Route parameter type for the App: ``async def route(app: BastionApp) -> ...``."""

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

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, WebSocketException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from bastion.app import App
from bastion.errors import AuthError
from bastion.security.identity import Principal, acting_as, current, set_current
from bastion.security.quota import QuotaExceeded, Quotas, quotas_for
from bastion.server.auth import VIA_KEY, cookie_principal, session_cookie
from bastion.server.errors import ApiError, error_response
from bastion.server.scopes import scope_for

if TYPE_CHECKING:
    from bastion.security.keystore import KeyStore

TOKEN_FIX = ("send the header 'Authorization: Bearer <token>' with your API key (bastion keys "
             "create --user NAME) or the admin's: bastion config get api.token --reveal")
PRINCIPAL_KEY = "bastion.principal"


class _Bearer(HTTPBearer):
    """HTTPBearer that also works on WebSocket routes; only declares the OpenAPI scheme."""

    async def __call__(
        self, conn: HTTPConnection
    ) -> HTTPAuthorizationCredentials | None:
        return None


_bearer = _Bearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (`bastion keys create --user NAME`), or the admin's api.token "
                "from `bastion init` (`bastion config get api.token --reveal`).",
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

    HTTP: only ``Authorization: Bearer`` (a browser's cookie: ``server/auth.py``).
    WebSocket (browsers cannot set headers on one): also the subprotocol
    ``bastion.token.<token>`` (offered with ``bastion``), and, for old clients,
    ``?token=`` (the API token is redacted from every log line).
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


def keystore(conn: HTTPConnection, app: App) -> KeyStore:
    """Return the API's user and key store, opened on first use.

    The configured api.token becomes (or stays) the ``admin`` user's key, so a one-person
    setup needs no user management.
    """
    state = conn.app.state
    store: KeyStore | None = getattr(state, "keystore", None)
    if store is None:
        from bastion.security.keystore import open_store

        store = open_store()
        token = app.config.api.token
        if token is not None and token.get_secret_value():
            store.ensure_admin(token.get_secret_value())
        state.keystore = store
    return store


def require_configured(app: App) -> None:
    """Refuse (503) while no api.token is configured: an empty one matches nothing."""
    expected = app.config.api.token
    if expected is None or not expected.get_secret_value():
        raise ApiError(
            503, "the API has no token configured, so every request is refused",
            code="no_token", fix="bastion init",
        )


def authenticate(conn: HTTPConnection) -> Principal:
    """Return the principal of the request's key, or raise the error to answer with.

    One indexed SQLite read per request (``KeyStore.authenticate``), so a revoked or expired
    key, or a disabled user, is refused on the next request. No configured token refuses
    everything (503).
    """
    cached: Principal | None = conn.scope.get(PRINCIPAL_KEY)
    if cached is not None:
        return cached
    app = get_app(conn)
    require_configured(app)
    given = _presented_token(conn)
    if given is not None:
        principal = key_principal(keystore(conn, app), given)
        conn.scope[VIA_KEY] = "key"
    elif (session := session_cookie(conn)) is not None:  # the browser sign-in (server/auth.py)
        principal = cookie_principal(conn, keystore(conn, app), session)
    else:
        raise AuthError("missing API token", fix=TOKEN_FIX)
    needed = scope_for(conn.scope["type"], conn.scope.get("method", ""), conn.scope["path"])
    if not principal.allows(needed):
        raise ApiError(403, f"this API key (user {principal.user}, key {principal.key_id}) "
                       f"lacks the scope {needed!r}", code="insufficient_scope",
                       fix=f"use a key with it: bastion keys create --user {principal.user} "
                           f"--scope {needed}")
    if principal.key_quota or principal.user_quota:
        try:
            quotas().hit(principal, "requests")
        except QuotaExceeded as exc:
            raise quota_error(exc) from exc
    if conn.query_params.get("all_users", "").lower() in ("1", "true", "yes"):
        principal = _all_users(app, principal, conn)
    conn.scope[PRINCIPAL_KEY] = principal
    return principal


def key_principal(store: KeyStore, key: str) -> Principal:
    """Return the principal of an API key (the bearer path and ``POST /v1/auth/login``)."""
    try:
        return store.authenticate(key)
    except AuthError as exc:
        if exc.message == "wrong API key":
            raise AuthError("wrong API token", fix=TOKEN_FIX) from exc
        raise


def quotas() -> Quotas:
    """Return this home's quota counters (shared with the gateway's tool-call stage)."""
    from bastion.config import paths

    return quotas_for(paths.home())


def quota_error(exc: QuotaExceeded) -> ApiError:
    """Return the 429 for a used-up quota, with ``Retry-After``."""
    return ApiError(429, exc.message, code="quota_exceeded",
                    fix=f"retry after {exc.retry_after} s; {exc.fix}",
                    headers={"Retry-After": str(exc.retry_after)})


_TURN = re.compile(r"/v1/chat/completions|/v1/sessions/[^/]+/messages|/v1/voice/ws")


@contextlib.contextmanager
def turn_quota(scope: Scope, principal: Principal) -> Iterator[None]:
    """Guard a request that runs an agent turn with the key's and user's turn quotas.

    Refused (:class:`QuotaExceeded`) when the tokens or tool calls are used up; holds a
    concurrent-turn slot while the turn runs.
    """
    is_turn = _TURN.fullmatch(scope["path"]) is not None and (
        scope["type"] == "websocket" or scope.get("method") == "POST")
    if not is_turn or not (principal.key_quota or principal.user_quota):
        yield
        return
    q = quotas()
    q.check_left(principal, "tokens")
    q.check_left(principal, "tool_calls")
    with q.turn(principal):
        yield


def _all_users(app: App, principal: Principal, conn: HTTPConnection) -> Principal:
    """Let an admin key see every user's sessions and documents for this request; audited."""
    if not principal.is_admin:
        raise ApiError(403, "all_users needs an API key with the admin scope",
                       code="insufficient_scope", fix="leave out all_users to see your own")
    with acting_as(principal):
        app.audit.record("access.all_users", actor="api", decision="allowed",
                         detail={"method": conn.scope.get("method", "WEBSOCKET"),
                                 "path": conn.scope["path"]})
    return dataclasses.replace(principal, all_users=True)


SESSION_FIX = "create one with POST /v1/sessions"
"""Sessions need no owner check here: a session's name is unique per owner and every lookup
by name or id is the caller's own (``memory/store.py``), so another user's session is, for a
key, one that does not exist, and a name they use is free to take (no existence oracle)."""


def owner_of(app: App, session_id: str) -> str | None:
    """Return who owns the session stored under ``session_id`` (``None``: nobody)."""
    lookup = getattr(app.memory, "owner_of", None)
    if lookup is None:
        lookup = getattr(getattr(app.memory, "store", None), "owner_of", None)
    owner = lookup(session_id) if lookup is not None else None
    return owner if isinstance(owner, str) else None


def may_approve(app: App, session_id: str | None) -> bool:
    """Whether the caller may see and decide approvals of ``session_id``.

    Its owner, a user with the ``approver`` role, the local CLI, and an admin's ``all_users``.
    """
    principal = current()
    if principal is None or principal.all_users or "approver" in principal.roles:
        return True
    return session_id is not None and owner_of(app, session_id) == principal.user


def token_error(conn: HTTPConnection) -> Exception | None:
    """Return the error for a request without a valid key, or ``None`` if it may pass."""
    try:
        authenticate(conn)
    except (ApiError, AuthError) as exc:
        return exc
    return None


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
        set_current(conn.scope[PRINCIPAL_KEY])
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
            principal = scope[PRINCIPAL_KEY]
            try:
                with acting_as(principal), turn_quota(scope, principal):
                    await self.app(scope, receive, send)
                return
            except QuotaExceeded as exc:  # raised before the turn started: nothing was sent
                error = quota_error(exc)
        if scope["type"] == "websocket":
            reason = "bad or missing token"
            if isinstance(error, ApiError) and error.status == 403:
                reason = error.message[:120]
            await WebSocketClose(status.WS_1008_POLICY_VIOLATION, reason)(
                scope, receive, send)
            return
        if isinstance(error, ApiError):
            status_code, code, fix = error.status, error.code, error.fix
            message, headers = error.message, error.headers
        else:
            assert isinstance(error, AuthError)
            status_code, code, fix, message = 401, "AuthError", error.fix, error.message
            headers = None
        if status_code == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        response = error_response(conn, status_code, message, code=code, fix=fix,
                                  headers=headers)
        await response(scope, receive, send)


BastionApp = Annotated[App, Depends(get_app)]
"""Route parameter type for the App: ``async def route(app: BastionApp) -> ...``."""

CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
"""Route parameter type for who asks: ``async def route(who: CurrentPrincipal) -> ...``."""

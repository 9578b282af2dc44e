"""The browser sign-in: a session cookie beside the bearer key, and its CSRF defence.

``POST /v1/auth/login`` (an API key) and the OpenID Connect callback end in the same cookie:
``bastion_session=<256 random bits>``, ``HttpOnly; SameSite=Strict; Path=/`` (``Secure``
over TLS). Only its HMAC is stored, in ``users.db`` (``KeyStore.create_session``), so every
request reads the session, its user and its key: signing out, revoking the key or disabling
the user ends it on the next request.

CSRF: a request authenticated by the cookie that can change state (any method but
GET/HEAD/OPTIONS, and every WebSocket) must carry an ``Origin`` equal to this server's own
(scheme and ``Host``). Browsers always send ``Origin`` on such requests, so another site's
page cannot use the cookie even where ``SameSite`` does not hold (a sibling subdomain, an
old browser). A bearer key is not sent by a browser on its own, so it needs no such check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection
from starlette.responses import Response

from bastion.server.errors import ApiError

if TYPE_CHECKING:
    from bastion.security.identity import Principal
    from bastion.security.keystore import KeyStore

COOKIE = "bastion_session"
VIA_KEY = "bastion.via"  # scope key: how the request's principal signed in ("key"/"oidc")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_FIX = "sign in again: POST /v1/auth/login with your API key"


def session_cookie(conn: HTTPConnection) -> str | None:
    """Return the session id the request's cookie carries (``None``: no cookie)."""
    return conn.cookies.get(COOKIE) or None


def own_origin(conn: HTTPConnection) -> str | None:
    """Return this server's origin as the request reached it (``scheme://host[:port]``)."""
    host = conn.headers.get("host")
    if not host:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme)
    return f"{scheme}://{host}".lower()


def origin_problem(conn: HTTPConnection) -> str | None:
    """Return why the request's ``Origin`` is not this server's (``None``: it is)."""
    origin = conn.headers.get("origin")
    if origin is None:
        return "it carries no Origin header"
    if origin.lower() != own_origin(conn):
        return f"it comes from another origin ({origin[:80]})"
    return None


def check_cookie_origin(conn: HTTPConnection) -> None:
    """Refuse a cookie-authenticated request that can change state from another origin."""
    if conn.scope["type"] == "http" and conn.scope.get("method", "GET") in SAFE_METHODS:
        return
    problem = origin_problem(conn)
    if problem is not None:
        raise ApiError(403, f"refused a request signed in by cookie: {problem}",
                       code="cross_origin",
                       fix="send it from this server's own pages, or use 'Authorization: "
                           "Bearer <key>' instead of the cookie")


def cookie_principal(conn: HTTPConnection, store: KeyStore, session: str) -> Principal:
    """Return the principal of the session cookie ``session`` (after the CSRF check)."""
    check_cookie_origin(conn)
    principal, via = store.authenticate_session(session)
    conn.scope[VIA_KEY] = via
    return principal


def set_session_cookie(response: Response, conn: HTTPConnection, session: str,
                       max_age_s: int) -> None:
    """Set the session cookie on ``response`` (``Secure`` when served over TLS)."""
    response.set_cookie(COOKIE, session, max_age=max_age_s, path="/", httponly=True,
                        samesite="strict", secure=conn.url.scheme in ("https", "wss"))


def clear_session_cookie(response: Response, conn: HTTPConnection) -> None:
    """Expire the session cookie in the browser."""
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=conn.url.scheme in ("https", "wss"))


"""Browser sign-in routes: an API key (or OpenID Connect) in, a session cookie out.

- ``POST /v1/auth/login`` ``{"api_key": "..."}``: checks the key as the bearer path does (a
  revoked, expired or disabled user's key is refused; its ``requests`` quota is charged) and
  sets the ``bastion_session`` cookie (:mod:`bastion.server.auth`), which then carries the
  key's scopes, quotas and audit principal.
- ``POST /v1/auth/logout``: ends the cookie's session server-side and clears the cookie.
- ``GET /v1/auth/me``: who the request is: ``{user, roles, scopes, via, key_id}``.
- ``GET /v1/auth/oidc/login`` and ``GET /v1/auth/oidc/callback``: OpenID Connect single
  sign-on (``api.oidc``; :mod:`bastion.server.auth_oidc`), ending in the same cookie.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.responses import JSONResponse, RedirectResponse, Response

from bastion.app import App
from bastion.errors import AuthError
from bastion.security.identity import Principal, acting_as
from bastion.server.auth import (
    VIA_KEY,
    check_cookie_origin,
    clear_session_cookie,
    origin_problem,
    own_origin,
    session_cookie,
    set_session_cookie,
)
from bastion.server.auth_oidc import (
    CALLBACK_PATH,
    PENDING_S,
    STATE_COOKIE,
    OidcSignIn,
    map_identity,
    principal_of,
    refused,
)
from bastion.server.contract import ApiModel, errors, feature_off
from bastion.server.deps import (
    BastionApp,
    CurrentPrincipal,
    key_principal,
    keystore,
    quota_error,
    quotas,
    require_configured,
)
from bastion.server.errors import ApiError

public_router = APIRouter(prefix="/v1/auth", tags=["auth"])
router = APIRouter(prefix="/v1/auth", tags=["auth"])


class LoginBody(ApiModel):
    """``POST /v1/auth/login``: the API key to sign in with (never echoed or logged)."""

    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr = Field(min_length=1, max_length=512)


class Me(BaseModel):
    """Who a request is: the user, their roles, the scopes it holds and how it signed in."""

    user: str
    roles: list[str]
    scopes: list[str]
    via: Literal["key", "oidc"]
    key_id: str


class SignedIn(Me):
    """A new browser session (its cookie is in ``Set-Cookie``, never in the body)."""

    expires_in: int = Field(description="seconds until the session ends")


class SignedOut(BaseModel):
    """The answer to ``POST /v1/auth/logout``."""

    signed_out: bool = Field(description="whether a live session was ended")


def me_of(principal: Principal, via: str) -> dict[str, Any]:
    """Return the ``/v1/auth/me`` body for ``principal``."""
    return {"user": principal.user, "roles": sorted(principal.roles),
            "scopes": sorted(principal.scopes), "via": via, "key_id": principal.key_id}


def start_session(request: Request, app: App, principal: Principal, via: str,
                  response: Response) -> None:
    """Store a new browser session of ``principal`` and set its cookie on ``response``."""
    ttl = int(app.config.api.session_hours * 3600)
    key_id = principal.key_id if via == "key" else None
    session = keystore(request, app).create_session(
        principal.user, scopes=principal.scopes, via=via, ttl_s=ttl, key_id=key_id)
    set_session_cookie(response, request, session, ttl)
    with acting_as(principal):
        app.audit.record("auth.login", actor="api", decision="allowed", detail={"via": via})


@public_router.post("/login", summary="Sign in a browser with an API key (sets a cookie)",
                    response_model=SignedIn, responses=errors(401, 403, 429, 503))
async def login(body: LoginBody, request: Request, app: BastionApp) -> JSONResponse:
    """Check the key like the bearer path and answer with the session cookie."""
    problem = origin_problem(request) if "origin" in request.headers else None
    if problem is not None:  # login CSRF: another site signing this browser in
        raise ApiError(403, f"refused a sign-in: {problem}", code="cross_origin",
                       fix="sign in from this server's own pages")
    require_configured(app)
    store = keystore(request, app)
    try:
        principal = key_principal(store, body.api_key.get_secret_value())
    except AuthError as exc:
        app.audit.record("auth.login", actor="api", decision="denied",
                         detail={"via": "key", "reason": exc.message})
        raise
    if principal.key_quota or principal.user_quota:
        from bastion.security.quota import QuotaExceeded

        try:
            quotas().hit(principal, "requests")
        except QuotaExceeded as exc:
            raise quota_error(exc) from exc
    ttl = int(app.config.api.session_hours * 3600)
    response = JSONResponse({**me_of(principal, "key"), "expires_in": ttl})
    start_session(request, app, principal, "key", response)
    return response


@public_router.post("/logout", summary="Sign a browser out (ends its session, clears the cookie)",
                    response_model=SignedOut, responses=errors(401, 403, 429, 503))
async def logout(request: Request, app: BastionApp) -> JSONResponse:
    """End the cookie's session server-side; a cookie from another origin is refused."""
    session = session_cookie(request)
    ended = False
    if session is not None:
        check_cookie_origin(request)
        store = keystore(request, app)
        try:
            principal, _ = store.authenticate_session(session)
        except AuthError:
            principal = None
        ended = store.end_session(session)
        if principal is not None:
            with acting_as(principal):
                app.audit.record("auth.logout", actor="api", decision="allowed")
    response = JSONResponse({"signed_out": ended})
    clear_session_cookie(response, request)
    return response


@router.get("/me", summary="Who this request is (user, roles, scopes, sign-in method)",
            response_model=Me)
async def me(request: Request, who: CurrentPrincipal) -> dict[str, Any]:
    """Return the caller's user, roles, scopes and how it signed in (``key`` or ``oidc``)."""
    return me_of(who, str(request.scope.get(VIA_KEY, "key")))


def _oidc(request: Request, app: App) -> OidcSignIn:
    """Return this server's OIDC relying party (built on first use), or the 409 when off."""
    config = app.config.api.oidc
    if not config.issuer:
        raise feature_off("single sign-on", "api.oidc.issuer", code="oidc_disabled")
    signin: OidcSignIn | None = getattr(request.app.state, "oidc", None)
    if signin is None:
        if app.secrets is None or config.client_secret is None:
            raise feature_off("single sign-on", "api.oidc.client_secret", code="oidc_disabled")
        signin = OidcSignIn(config, app.secrets.resolve(config.client_secret),
                            keystore(request, app))
        request.app.state.oidc = signin
    return signin


@public_router.get("/oidc/login", summary="Start single sign-on (redirects to the provider)",
                   response_class=RedirectResponse, status_code=302,
                   responses=errors(401, 403, 409, 429, 502, 503))
async def oidc_login(request: Request, app: BastionApp) -> Response:
    """Redirect the browser to the OpenID provider (authorization code + PKCE)."""
    require_configured(app)
    signin = _oidc(request, app)
    redirect_url = app.config.api.oidc.redirect_url or f"{own_origin(request)}{CALLBACK_PATH}"
    url, state = await signin.start(redirect_url)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(STATE_COOKIE, state, max_age=PENDING_S, path="/v1/auth/oidc",
                        httponly=True, samesite="lax", secure=request.url.scheme == "https")
    return response


@public_router.get("/oidc/callback", summary="Finish single sign-on (sets the session cookie)",
                   response_class=RedirectResponse, status_code=303,
                   responses=errors(401, 403, 409, 429, 502, 503))
async def oidc_callback(
    request: Request, app: BastionApp,
    state: str | None = Query(default=None, max_length=512),
    code: str | None = Query(default=None, max_length=4096),
    error: str | None = Query(default=None, max_length=200),
) -> Response:
    """Check the state, exchange the code, verify the ID token, map the user, set the cookie."""
    require_configured(app)
    signin = _oidc(request, app)
    try:
        pending = signin.take(state, request.cookies.get(STATE_COOKIE))
        if error is not None:
            raise refused(f"the provider answered {error[:60]!r}")
        if not code:
            raise refused("the callback carries no code")
        claims = await signin.finish(pending, code)
        store = keystore(request, app)
        user = map_identity(app.config.api.oidc, claims, store)
    except ApiError as exc:
        app.audit.record("auth.login", actor="api", decision="denied",
                         detail={"via": "oidc", "reason": exc.message})
        raise
    principal = principal_of(app.config.api.oidc, store, user)
    response = RedirectResponse("/", status_code=303)
    start_session(request, app, principal, "oidc", response)
    response.delete_cookie(STATE_COOKIE, path="/v1/auth/oidc", httponly=True, samesite="lax")
    return response

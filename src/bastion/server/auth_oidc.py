"""OpenID Connect single sign-on: authorization code + PKCE with authlib, ending in the cookie.

``GET /v1/auth/oidc/login`` makes a state, a nonce and a PKCE verifier (authlib), keeps them
server-side for ten minutes (in ``users.db``: a restart before the callback loses nothing),
binds the state to the browser with the ``bastion_oidc`` cookie (``SameSite=Lax``: it must
come back on the provider's redirect) and redirects to the
provider. ``GET /v1/auth/oidc/callback`` takes each state once (a replayed callback finds
none), checks it against the browser's cookie, exchanges the code with the client secret and
the verifier (authlib), and has authlib verify the ID token: signature against the
provider's JWKS, ``iss``, ``aud``, ``exp`` and the nonce. The identity then maps to a bastion
user (:func:`map_identity`) and the browser gets the same session cookie as an API-key
sign-in, with the scopes of the user's roles (``api.oidc.role_scopes``).

Why authlib: discovery, PKCE, the token exchange and JOSE verification are a protocol's worth
of security-critical code; authlib is maintained and covers them (the issue names it).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.errors import NotFoundError
from bastion.security.identity import ROLES, Principal, make_principal
from bastion.server.errors import ApiError

if TYPE_CHECKING:
    from bastion.config.model import OidcConfig
    from bastion.security.keystore import KeyStore

STATE_COOKIE = "bastion_oidc"
CALLBACK_PATH = "/v1/auth/oidc/callback"
PENDING_S = 600
MAX_PENDING = 1000
LOGIN_AGAIN = "start again: GET /v1/auth/oidc/login"


@dataclass(frozen=True, slots=True)
class _Pending:
    nonce: str
    verifier: str
    redirect_url: str


def refused(message: str, *, code: str = "oidc_refused", fix: str = LOGIN_AGAIN,
            status: int = 401) -> ApiError:
    """Return the one-line error of a refused single sign-on (never a token or code in it)."""
    return ApiError(status, f"single sign-on refused: {message}", code=code, fix=fix)


class OidcSignIn:
    """The relying party of one provider (authlib's client) and the sign-ins under way."""

    def __init__(self, config: OidcConfig, client_secret: str, store: KeyStore) -> None:
        from bastion._extras import require

        oauth = require("authlib.integrations.starlette_client", extra="sso",
                        feature="single sign-on (api.oidc)")
        assert config.issuer is not None
        self.config = config
        self.issuer = config.issuer.rstrip("/")
        self.client: Any = oauth.OAuth().register(
            "bastion",
            server_metadata_url=f"{self.issuer}/.well-known/openid-configuration",
            client_id=config.client_id, client_secret=client_secret,
            client_kwargs={"scope": " ".join(config.scopes), "code_challenge_method": "S256",
                           "timeout": 15.0})
        self.store = store  # the sign-ins under way (users.db)

    async def start(self, redirect_url: str) -> tuple[str, str]:
        """Return the provider's authorization URL and the state (kept for the callback)."""
        try:
            rv = await self.client.create_authorization_url(
                redirect_url, state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32))
        except Exception as exc:  # the provider is down or its metadata is unusable
            # from None: the HTTP client's exception may quote the request (client credentials)
            raise provider_error(self.issuer, exc) from None
        if not self.store.put_sign_in(str(rv["state"]), str(rv["nonce"]),
                                      str(rv["code_verifier"]), redirect_url,
                                      ttl_s=PENDING_S, most=MAX_PENDING):
            raise ApiError(503, "too many single sign-ins under way",
                           code="oidc_busy", fix="retry in a few minutes")
        return str(rv["url"]), str(rv["state"])

    def take(self, state: str | None, browser_state: str | None) -> _Pending:
        """Return (and forget) the sign-in ``state`` names, if this browser started it."""
        if not state:
            raise refused("the callback carries no state", code="oidc_state")
        kept = self.store.take_sign_in(state)
        if kept is None:
            raise refused("unknown, used or expired state (a replayed or forged callback)",
                          code="oidc_state")
        if browser_state is None or not hmac.compare_digest(browser_state, state):
            raise refused("the state is not this browser's (a callback started elsewhere)",
                          code="oidc_state")
        return _Pending(*kept)

    async def finish(self, pending: _Pending, code: str) -> dict[str, Any]:
        """Exchange ``code`` (client secret + PKCE verifier); return the verified ID token's claims.

        authlib checks the signature against the provider's JWKS, ``iss``, ``aud``, ``exp``,
        ``iat``, the nonce and ``at_hash``.
        """
        from authlib.integrations.base_client import OAuthError

        try:
            token = await self.client.fetch_access_token(
                redirect_uri=pending.redirect_url, code=code, code_verifier=pending.verifier)
        except OAuthError as exc:
            # from None: the token request's error carries the code, verifier and client secret
            raise refused(f"the provider refused the code ({exc.error})") from None
        except Exception as exc:
            # from None: the token request's error carries the code, verifier and client secret
            raise provider_error(self.issuer, exc) from None
        return await self.verify(token, pending.nonce)

    async def verify(self, token: dict[str, Any], nonce: str) -> dict[str, Any]:
        """Return the claims of ``token``'s ID token once authlib has verified it."""
        if "id_token" not in token:
            raise refused("the provider sent no ID token", fix="add openid to api.oidc.scopes")
        try:
            claims = await self.client.parse_id_token(token, nonce=nonce, leeway=30)
        except Exception as exc:  # joserfc: bad signature, wrong iss/aud, expired, nonce...
            # from None: the verification error can hold the ID token itself
            raise refused(f"the ID token failed verification ({_why(exc)})",
                          code="oidc_id_token") from None
        return dict(claims)


def _why(exc: Exception) -> str:
    """Return a short reason from a joserfc/authlib error (no token text)."""
    error = getattr(exc, "error", None) or type(exc).__name__
    description = getattr(exc, "description", None)
    text = f"{error}: {description}" if description else str(error)
    return " ".join(text.split())[:160]


def provider_error(issuer: str, exc: Exception) -> ApiError:
    """Return the 502 for a provider that cannot be reached or answers nonsense."""
    return ApiError(502, f"the OpenID provider {issuer} failed: {type(exc).__name__}",
                    code="oidc_provider", fix="check api.oidc.issuer and that the provider "
                    "is up (curl ISSUER/.well-known/openid-configuration)")


def _claim_roles(value: object) -> list[str]:
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list):
        return []
    return [r for r in items if isinstance(r, str) and r in ROLES]


def map_identity(config: OidcConfig, claims: dict[str, Any], store: KeyStore) -> str:
    """Return the bastion user a verified identity signs in as, or raise the refusal.

    ``api.oidc.users`` maps the ``match`` claim (a verified email, or ``sub``) to a user; an
    identity provisioned before finds its user by issuer and ``sub``; otherwise, with
    ``auto_provision`` and an email of an allowed domain, a new user is created. Roles come
    from ``roles_claim`` when the token carries it (set on every sign-in).
    """
    sub = str(claims.get("sub") or "")
    email = claims.get("email")
    verified = isinstance(email, str) and claims.get("email_verified") is True
    email = email.lower() if isinstance(email, str) else None
    value = email if config.match == "email" else sub
    if config.match == "email" and not verified:
        raise refused("the provider vouches for no verified email",
                      fix="verify the email at the provider, or set api.oidc.match: sub",
                      status=403, code="oidc_user")
    if not value:
        raise refused(f"the ID token has no {config.match}", status=403, code="oidc_user",
                      fix="ask for it: add email to api.oidc.scopes")
    subject = f"{claims.get('iss', '')} {sub}"
    roles = _claim_roles(claims.get(config.roles_claim)) if config.roles_claim else []
    user = config.users.get(value) or store.linked_user(subject)
    if user is None:
        domain = email.rpartition("@")[2] if email and verified else None
        if config.allowed_domains and domain not in config.allowed_domains:
            raise refused(f"{value} is not in an allowed domain or the user list",
                          status=403, code="oidc_user",
                          fix="an admin adds it to api.oidc.users or api.oidc.allowed_domains")
        if not config.auto_provision:
            raise refused(f"no bastion user for {value}", status=403, code="oidc_user",
                          fix=f"an admin maps it: api.oidc.users: {{{value}: NAME}} (or "
                              "sets api.oidc.auto_provision)")
        try:
            store.provision_user(value, roles or config.default_roles, subject)
        except Exception as exc:  # taken name, unusable name
            raise refused(f"cannot create a user for {value}: {getattr(exc, 'message', exc)}",
                          status=403, code="oidc_user",
                          fix=f"an admin maps it: api.oidc.users: {{{value}: NAME}}") from exc
        return value
    try:
        info = store.user(user)
    except NotFoundError as exc:
        raise refused(f"{value} maps to user {user!r}, who does not exist", status=403,
                      code="oidc_user", fix=f"bastion users add {user}") from exc
    if info.disabled:
        raise refused(f"user {user} is disabled", status=403, code="oidc_user",
                      fix=f"an admin can enable it: bastion users disable {user} --enable")
    if roles and set(roles) != set(info.roles):
        store.set_roles(user, roles)
    return user


def principal_of(config: OidcConfig, store: KeyStore, user: str) -> Principal:
    """Return the principal of an SSO sign-in of ``user``: the scopes of their roles."""
    info = store.user(user)
    scopes = sorted({s for r in info.roles for s in config.role_scopes.get(r, [])})
    return make_principal(user, "oidc", set(info.roles), scopes, "oidc",
                          user_quota=store.quota(user))

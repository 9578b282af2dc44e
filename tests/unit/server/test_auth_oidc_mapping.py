"""Who a verified OpenID Connect identity signs in as (``map_identity``), on a real users.db.

The protocol itself (state, PKCE, the ID token's checks) runs against a real provider in
tests/security/test_users_oidc.py; these are the mapping rules, each as the misuse it stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.config.model import OidcConfig
from bastion.security.keystore import KeyStore
from bastion.server.auth_oidc import map_identity, principal_of
from bastion.server.errors import ApiError
from tests.unit.server.conftest import TOKEN

ISS = "https://id.example.org"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    s = KeyStore(tmp_path)
    s.add_user("alice", ["user"])
    s.add_user("root@example.org", ["admin", "user"])  # made by an admin with the CLI
    yield s
    s.close()


def _cfg(**kw: Any) -> OidcConfig:
    return OidcConfig(issuer=ISS, client_id="bastion", client_secret="secret://env/x", **kw)


def _claims(email: str, sub: str = "s-1", verified: bool = True, **kw: Any) -> dict[str, Any]:
    return {"iss": ISS, "sub": sub, "email": email, "email_verified": verified, **kw}


def _refused(cfg: OidcConfig, claims: dict[str, Any], store: KeyStore) -> ApiError:
    with pytest.raises(ApiError) as caught:
        map_identity(cfg, claims, store)
    assert caught.value.status == 403 and caught.value.code == "oidc_user"
    return caught.value


def test_the_users_map_by_email_or_sub(store: KeyStore) -> None:
    assert map_identity(_cfg(users={"alice@corp.example": "alice"}),
                        _claims("Alice@Corp.example"), store) == "alice"
    assert map_identity(_cfg(match="sub", users={"s-42": "alice"}),
                        _claims("x@y.example", sub="s-42", verified=False), store) == "alice"


def test_an_unknown_or_unverified_person_is_refused(store: KeyStore) -> None:
    err = _refused(_cfg(), _claims("eve@example.org"), store)
    assert "no bastion user for eve@example.org" in err.message
    assert "api.oidc.users" in (err.fix or "")
    err = _refused(_cfg(users={"alice@corp.example": "alice"}),
                   _claims("alice@corp.example", verified=False), store)
    assert "no verified email" in err.message


def test_auto_provision_keeps_to_the_domains_and_never_takes_an_existing_user(
        store: KeyStore) -> None:
    cfg = _cfg(auto_provision=True, allowed_domains=["example.org"],
               roles_claim="groups")
    _refused(cfg, _claims("eve@evil.example"), store)
    # a provider claiming an email equal to an existing user's name does not become them
    err = _refused(cfg, _claims("root@example.org", sub="attacker", groups=["admin"]), store)
    assert "cannot create a user" in err.message
    assert store.user("root@example.org").roles == ("admin", "user")
    # a new person is created once and found again by issuer + sub
    user = map_identity(cfg, _claims("new@example.org", sub="s-new", groups="approver user"),
                        store)
    assert user == "new@example.org"
    assert store.user(user).roles == ("approver", "user")
    assert map_identity(cfg, _claims("new@example.org", sub="s-new"), store) == user
    me = principal_of(cfg, store, user)
    assert me.scopes == {"approvals", "chat", "knowledge:write", "sessions:read",
                         "sessions:write"}


def test_a_disabled_user_cannot_sign_in(store: KeyStore) -> None:
    store.set_disabled("alice")
    err = _refused(_cfg(users={"a@corp.example": "alice"}), _claims("a@corp.example"), store)
    assert "disabled" in err.message


def test_the_cookie_is_secure_over_tls(make_api) -> None:  # type: ignore[no-untyped-def]
    api = make_api()
    tls = TestClient(api.client.app, base_url="https://testserver")
    r = tls.post("/v1/auth/login", json={"api_key": TOKEN})
    assert r.status_code == 200, r.text
    assert "Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    plain = api.client.post("/v1/auth/login", json={"api_key": TOKEN})
    assert "Secure" not in plain.headers["set-cookie"]

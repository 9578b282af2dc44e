"""The Vault backend against a real OpenBao dev server: KV v2, token and AppRole, renewal."""

from __future__ import annotations

import hvac
import pytest

from bastion.errors import SecretError
from bastion.security.secrets import SecretResolver
from bastion.security.secrets.vault import VaultBackend
from tests.integration.security.conftest import Bao


def test_kv2_with_token(openbao: Bao) -> None:
    v = VaultBackend(openbao.url, token=openbao.token)
    v.put("app/db", {"user": "svc", "password": "pw-kv2-777"})
    v.put("app/github", {"token": "ghp_example_token"})
    v.put("other", {"value": "x1"})
    assert v.get("app/db") == {"user": "svc", "password": "pw-kv2-777"}
    assert v.list() == ["app/db", "app/github", "other"]
    assert v.list("app") == ["app/db", "app/github"]
    v.put("app/db", {"user": "svc", "password": "rotated-888"})  # a new version
    assert v.get("app/db")["password"] == "rotated-888"
    resolver = SecretResolver({"vault": v})
    assert resolver.resolve("secret://vault/app/db#password") == "rotated-888"
    v.delete("other")
    with pytest.raises(SecretError, match="no secret"):
        v.get("other")
    with pytest.raises(SecretError):
        VaultBackend(openbao.url, token="wrong-token").get("app/db")


def test_approle_login_and_lease_renewal(openbao: Bao) -> None:
    admin = hvac.Client(url=openbao.url, token=openbao.token)
    if "approle/" not in admin.sys.list_auth_methods():
        admin.sys.enable_auth_method("approle")
    admin.sys.create_or_update_policy(
        "bastion-read", 'path "secret/data/app/*" { capabilities = ["read", "create", "update"] }'
        '\npath "secret/metadata/app/*" { capabilities = ["list", "read"] }')
    admin.auth.approle.create_or_update_approle(
        "bastion", token_policies=["bastion-read"], token_ttl="60s", token_max_ttl="600s")
    role_id = admin.auth.approle.read_role_id("bastion")["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id("bastion")["data"]["secret_id"]
    VaultBackend(openbao.url, token=openbao.token).put("app/api", {"key": "approle-secret"})

    v = VaultBackend(openbao.url, role_id=role_id, secret_id=secret_id)
    assert v.token_ttl and v.token_ttl <= 60
    assert v.get("app/api") == {"key": "approle-secret"}
    with pytest.raises(SecretError, match="permission denied"):
        v.put("elsewhere", {"x": "y"})  # outside the policy
    info = v.token_info()
    assert info["renewable"] is True and "bastion-read" in info["policies"]
    assert v.renew() > 0 and v.renewals == 1
    # A revoked token cannot be renewed: the backend logs in again with AppRole.
    admin.auth.token.revoke(v._client.token)
    v.renew()
    assert v.get("app/api") == {"key": "approle-secret"}
    v.start_renewal(min_interval_s=0.2)
    v.close()

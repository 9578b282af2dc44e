"""The crypto API routes on a real app: proofs, seal status, rotation against OpenBao."""

from __future__ import annotations

from fastapi.testclient import TestClient

from bastion.app import build_app
from bastion.config.model import Config
from bastion.server.app import create_app
from bastion.testing import ScriptedModel
from tests.integration.security.conftest import Bao

TOKEN = "tok-crypto-api-5b8e"


def test_proof_and_rotation_routes(openbao: Bao) -> None:
    config = Config.model_validate({
        "api": {"token": TOKEN}, "memory": {"enabled": False},
        "secrets": {"vault": {"url": openbao.url, "token": openbao.token, "renew": False}},
    })
    app = build_app(config, model=ScriptedModel())
    for i in range(6):
        app.audit.record("tool_call", tool="shell", decision="denied" if i % 2 else "allowed")
    app.secrets.backends["vault"].put("api/key", {"value": "api-old-value-77"})  # type: ignore[union-attr]
    with TestClient(create_app(app), headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        proof = c.get("/v1/audit/proofs/4").json()
        assert proof["record"]["id"] == 4
        assert c.post("/v1/audit/verify-proof", json=proof).json()["ok"] is True
        proof["record"]["tool"] = "other"
        res = c.post("/v1/audit/verify-proof", json=proof).json()
        assert res["ok"] is False and "not in the signed tree" in res["reason"]
        count = c.get("/v1/audit/count-proof", params={"predicate": "denied"}).json()
        assert count["statement"].startswith("3 of 6 audit records")
        assert c.post("/v1/audit/verify-proof", json=count).json()["ok"] is True
        assert c.get("/v1/audit/proofs/999").status_code == 404
        seal = c.get("/v1/crypto/seal").json()  # one shape: unset fields are null
        assert (seal["sealed"], seal["files"], seal["threshold"]) == (False, [], None)
        r = c.post("/v1/secrets/rotate", json={"backend": "vault", "path": "api/key",
                                               "emergency": True}).json()
        assert r["destroyed"] == [r["old_version"]] and "api-old-value-77" not in str(r)
        assert app.secrets.resolve("secret://vault/api/key") != "api-old-value-77"  # type: ignore[union-attr]
        assert TestClient(create_app(app)).get("/v1/audit/proofs/1").status_code == 401
    kinds = [e.kind for e in app.audit.events(limit=20)]
    assert "secret.rotation.emergency" in kinds
    app.audit.close()

from __future__ import annotations

import sys
import types

import pytest
from fastapi import APIRouter, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from bastion import errors as e
from bastion.config.model import ApiConfig, Config
from bastion.server import app as server_app
from bastion.server.app import create_app
from bastion.server.errors import status_for
from tests.unit.server.conftest import TOKEN


def _one_line_error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert isinstance(err["message"], str) and "\n" not in err["message"]
    assert "Traceback" not in resp.text
    return err


def test_health_needs_no_token(make_api):
    api = make_api(auth=False)
    resp = api.client.get("/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("headers", "word"),
    [
        ({}, "missing"),
        ({"Authorization": "Bearer wrong-token"}, "wrong"),
        ({"Authorization": f"Basic {TOKEN}"}, "missing"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "wrong"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "wrong"),
    ],
)
def test_every_other_route_needs_the_token(make_api, headers, word):
    api = make_api(auth=False)
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                         ("GET", "/openapi.json"), ("POST", "/v1/sessions"),
                         ("GET", "/v1/sessions/abc")]:
        resp = api.client.request(method, path, headers=headers, json={})
        err = _one_line_error(resp, 401)
        assert word in err["message"]
        assert err["type"] == "authentication_error"
        assert "bastion config get api.token" in err["message"]
        assert resp.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in resp.text


def test_token_is_checked_before_the_body_is_read(make_api):
    api = make_api(auth=False)
    resp = api.client.post("/v1/chat/completions", content=b'{"broken',
                           headers={"Content-Type": "application/json"})
    assert resp.status_code == 401  # not 422: nothing about the body is looked at
    resp = api.client.get("/v1/no-such-route")
    assert resp.status_code == 401  # unknown routes are not revealed either
    resp = api.client.get("/v1/no-such-route", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 404


def test_token_accepted_case_insensitive_scheme(make_api):
    api = make_api(auth=False)
    resp = api.client.get("/v1/models", headers={"Authorization": f"bearer {TOKEN}"})
    assert resp.status_code == 200


def test_no_configured_token_refuses_everything_but_health(make_api):
    api = make_api(token=None)
    assert api.client.get("/health").status_code == 200
    err = _one_line_error(api.client.get("/v1/models",
                                         headers={"Authorization": "Bearer anything"}), 503)
    assert "bastion init" in err["message"]


def test_openapi_schema_served_behind_token(make_api):
    api = make_api()
    schema = api.client.get("/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"]
    assert "/v1/sessions/{session_id}/messages" in schema["paths"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert api.client.get("/docs").status_code == 404


def test_unknown_path_and_method_are_json(make_api):
    api = make_api()
    err = _one_line_error(api.client.get("/v1/nothing"), 404)
    assert "GET /v1/nothing" in err["message"]
    err = _one_line_error(api.client.delete("/v1/models"), 405)
    assert "DELETE" in err["message"]


def test_bad_json_body_is_one_line_422(make_api):
    api = make_api()
    resp = api.client.post("/v1/chat/completions", content=b'{"model": "bastion-agent",',
                           headers={"Content-Type": "application/json"})
    err = _one_line_error(resp, 422)
    assert err["message"].startswith("request body is not valid JSON")
    resp = api.client.post("/v1/chat/completions", content=b"hello")
    err = _one_line_error(resp, 422)
    assert "JSON object" in err["message"]


def test_invalid_fields_name_the_field(make_api):
    api = make_api()
    err = _one_line_error(api.client.post("/v1/chat/completions", json={"model": "x"}), 422)
    assert err["message"] == "invalid request body: messages: field required"
    assert err["param"] == "messages"
    resp = api.client.post("/v1/chat/completions", json={
        "model": "bastion-agent", "messages": [{"role": "robot", "content": "hi"}],
        "temperature": 9})
    err = _one_line_error(resp, 422)
    assert "messages.0.role" in err["message"] and "(+1 more)" in err["message"]


def test_unexpected_exception_is_a_generic_500(make_api):
    api = make_api(raise_server_exceptions=False)

    async def boom(*args, **kwargs):
        raise RuntimeError(f"kaboom with {TOKEN}")
        yield  # pragma: no cover

    api.model.chat = boom  # type: ignore[method-assign]
    resp = api.client.post("/v1/chat/completions", json={
        "model": "scripted", "messages": [{"role": "user", "content": "hi"}]})
    err = _one_line_error(resp, 500)
    assert err["message"].startswith("internal error")
    assert "kaboom" not in resp.text and TOKEN not in resp.text


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (e.AuthError("x"), 401),
        (e.PolicyDenied("x"), 403),
        (e.NotFoundError("x"), 404),
        (e.ToolNotFoundError("x"), 404),
        (e.ToolArgumentsError("x"), 400),
        (e.ConfigError("x"), 400),
        (e.ModelError("x"), 502),
        (e.ModelOutputError("x"), 502),
        (e.ClusterError("x"), 503),
        (e.SandboxError("x"), 503),
        (e.MissingExtraError("voice", "voice", "piper"), 503),
        (e.MemoryStoreError("x"), 503),
        (e.BastionError("x"), 400),
    ],
)
def test_bastion_error_status_mapping(exc, status):
    assert status_for(exc) == status


def test_bastion_error_raised_by_a_route_is_mapped_and_redacted(make_api):
    api = make_api()

    async def down(*args, **kwargs):
        raise e.ModelError(f"backend at http://user:{TOKEN}@host refused", fix="start it")
        yield  # pragma: no cover

    api.model.chat = down  # type: ignore[method-assign]
    resp = api.client.post("/v1/chat/completions", json={
        "model": "scripted", "messages": [{"role": "user", "content": "hi"}]})
    err = _one_line_error(resp, 502)
    assert err["code"] == "ModelError" and err["fix"] == "start it"
    assert TOKEN not in resp.text and "[REDACTED]" in err["message"]


@pytest.fixture
def extra_module(monkeypatch):
    """A route module written by another feature, registered the documented way."""
    mod = types.ModuleType("bastion_test_extra_routes")
    router = APIRouter()

    @router.get("/v1/extra")
    async def extra() -> dict:
        return {"ok": True}

    @router.websocket("/v1/extra/ws")
    async def extra_ws(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"hello": "ws"})
        await ws.close()

    mod.router = router  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(server_app, "ROUTE_MODULES",
                        [*server_app.ROUTE_MODULES, mod.__name__])
    return mod


def test_added_route_modules_get_the_token_check(make_api, extra_module):
    api = make_api(auth=False)
    assert api.client.get("/v1/extra").status_code == 401
    ok = api.client.get("/v1/extra", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.json() == {"ok": True}
    with pytest.raises(WebSocketDisconnect) as info, api.client.websocket_connect("/v1/extra/ws"):
        pass
    assert info.value.code == 1008
    with api.client.websocket_connect("/v1/extra/ws",
                                      headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert ws.receive_json() == {"hello": "ws"}
    with api.client.websocket_connect(f"/v1/extra/ws?token={TOKEN}") as ws:
        assert ws.receive_json() == {"hello": "ws"}


def test_clashing_routes_fail_at_start(monkeypatch, make_api):
    api = make_api()
    mod = types.ModuleType("bastion_test_clash_routes")
    router = APIRouter()

    @router.get("/v1/models")
    async def again() -> dict:
        return {}

    mod.router = router  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(server_app, "ROUTE_MODULES", [*server_app.ROUTE_MODULES, mod.__name__])
    with pytest.raises(RuntimeError, match="GET /v1/models is defined by both"):
        create_app(api.app)


def test_create_app_without_app_builds_one_at_startup():
    api = create_app()
    assert api.state.bastion is None
    with TestClient(api) as client:
        assert api.state.bastion is not None
        assert client.get("/health").json()["status"] == "ok"
        err = client.get("/v1/models").json()["error"]  # a fresh config has no token
        assert "bastion init" in err["message"]


def test_close_app_closes_the_model_on_shutdown(bastion_home):
    from bastion.app import build_app
    from bastion.testing import ScriptedModel

    model = ScriptedModel()
    app = build_app(Config(api=ApiConfig(token=TOKEN)), model=model)
    with TestClient(create_app(app)):
        pass
    assert not model.closed  # not built here: the caller closes it
    with TestClient(create_app(app, close_app=True)):
        assert not model.closed
    assert model.closed

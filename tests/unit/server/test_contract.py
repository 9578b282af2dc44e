"""The OpenAPI document states every route's real error answers, content types and limits.

The live check of the whole document is ``tests/integration/server/test_contract.py``
(schemathesis against ``bastion serve``); this one is quick and names the route at fault.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bastion.server.app import create_app
from bastion.server.contract import SSE, SSE_EVENT, feature_off
from bastion.server.errors import ApiError
from tests.unit.server.conftest import Api

ERROR_REF = "#/components/schemas/ErrorBody"
PUBLIC = {("get", "/health"), ("get", "/v1/auth/providers")}  # answer without a key


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    doc = create_app().openapi()
    return [(method, path, op) for path, item in doc["paths"].items()
            for method, op in item.items()]


OPERATIONS = _operations()


def test_the_document_lists_every_route() -> None:
    assert len(OPERATIONS) > 40
    assert ("post", "/v1/ingest") in {(m, p) for m, p, _ in OPERATIONS}


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS,
                         ids=[f"{m.upper()} {p}" for m, p, _ in OPERATIONS])
def test_route_documents_its_errors(method: str, path: str, op: dict[str, Any]) -> None:
    responses = op["responses"]
    codes = {int(c) for c in responses}
    if (method, path) not in PUBLIC:
        assert {401, 403, 429, 503} <= codes, f"{method.upper()} {path}: auth errors undocumented"
    if op.get("parameters") or "requestBody" in op:
        assert 422 in codes, f"{method.upper()} {path}: validation error not documented"
    if "requestBody" in op:
        assert 400 in codes, f"{method.upper()} {path}: undecodable body not documented"
    for code in codes - {c for c in codes if c < 400}:
        schema = responses[str(code)]["content"]["application/json"]["schema"]
        assert schema == {"$ref": ERROR_REF}, f"{method.upper()} {path} {code}: not ErrorBody"
    for code in (c for c in codes if c < 400):
        for media, body in responses[str(code)].get("content", {}).items():
            schema = body["schema"]
            if media == SSE:
                assert schema["required"] in (["data"], ["event", "data"]), path
                assert schema["properties"]["data"] == SSE_EVENT["properties"]["data"], path
            elif media == "application/json":  # a named model, never a bare object
                assert set(schema) == {"$ref"}, f"{method.upper()} {path} {code}: untyped body"
            else:
                assert schema["type"] == "string", f"{method.upper()} {path} {code}: {media}"


def test_streams_are_documented_as_event_streams() -> None:
    streams = {(m, p) for m, p, op in OPERATIONS
               if SSE in op["responses"].get("200", {}).get("content", {})}
    assert streams == {("post", "/v1/chat/completions"), ("post", "/v1/models/pull"),
                       ("get", "/v1/approvals/events"),
                       ("post", "/v1/sessions/{session_id}/messages")}


def test_streams_name_their_events() -> None:
    doc = create_app().openapi()
    def names(method: str, path: str) -> list[str]:
        event = doc["paths"][path][method]["responses"]["200"]["content"][SSE]["schema"]
        return list(event["properties"]["event"]["enum"])

    assert names("get", "/v1/approvals/events") == ["ready", "approval_pending",
                                                    "approval_resolved"]
    assert names("post", "/v1/models/pull") == ["progress", "done", "error"]
    assert names("post", "/v1/sessions/{session_id}/messages")[0] == "session"
    assert {"text", "tool_started", "tool_finished", "done", "error"} <= set(
        names("post", "/v1/sessions/{session_id}/messages"))
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert "enum" not in chat[SSE]["schema"]["properties"]["event"]  # OpenAI's: data only


def test_every_named_event_documents_its_payload() -> None:
    doc = create_app().openapi()
    comps = doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            event = op["responses"].get("200", {}).get("content", {}).get(SSE, {}).get("schema")
            if not event or "enum" not in event["properties"]["event"]:
                continue
            named = {b["properties"]["event"]["const"]:
                     b["properties"]["data"]["contentSchema"]["$ref"].rsplit("/", 1)[1]
                     for b in event["oneOf"]}
            assert list(named) == event["properties"]["event"]["enum"], path
            for name, model in named.items():  # an object with typed fields
                assert comps[model]["type"] == "object" and comps[model]["properties"], (
                    f"{method.upper()} {path} {name}")
    turn = doc["paths"]["/v1/sessions/{session_id}/messages"]["post"]["responses"]["200"]
    done = next(b for b in turn["content"][SSE]["schema"]["oneOf"]
                if b["properties"]["event"]["const"] == "done")
    assert comps[done["properties"]["data"]["contentSchema"]["$ref"].rsplit("/", 1)[1]][
        "required"] == ["type", "answer", "steps", "prompt_tokens", "completion_tokens",
                        "forced_final"]


def test_event_payloads_carry_only_documented_fields() -> None:
    """What ``event_payload`` builds for each agent event is its model, field for field."""
    from bastion.agent.events import ToolFinished, ToolStarted, TurnDone, TurnError
    from bastion.messages import TextDelta, ToolCall, Usage
    from bastion.security.gateway import ToolResult
    from bastion.security.redact import Redactor
    from bastion.server.events import event_payload
    from bastion.server.stream_events import TURN_EVENTS, parse_turn_event

    call = ToolCall("shell", {"command": "ls"}, id="c1")
    events = [TextDelta("hi"), ToolStarted(call, 1),
              ToolFinished(ToolResult("c1", "shell", True, "a b", decision="allowed"), 1),
              Usage(3, 4), TurnDone("answer", 1, 3, 4), TurnError("broke")]
    for event in events:
        name, payload = event_payload(event, Redactor())
        model = TURN_EVENTS[name]
        assert set(payload) <= set(model.model_fields), name
        assert type(parse_turn_event(json.dumps(payload))) is model


def test_every_success_body_is_a_model_the_routes_return(make_api) -> None:
    from bastion.server import responses

    doc = create_app().openapi()
    refs = {body["schema"]["$ref"].rsplit("/", 1)[1]
            for item in doc["paths"].values() for op in item.values()
            for code, resp in op["responses"].items() if int(code) < 400
            for media, body in resp.get("content", {}).items() if media == "application/json"}
    comps = doc["components"]["schemas"]
    for name in refs:  # a named object with its fields, not a free-form dict
        assert comps[name]["type"] == "object" and comps[name]["properties"], name
    assert {"SessionPage", "AuditEvents", "PendingList", "TurnAnswer"} <= refs
    c = make_api().client  # the bodies validate against their published models
    assert responses.SessionCreated.model_validate(c.post("/v1/sessions", json={}).json())
    assert responses.ModelList.model_validate(c.get("/v1/models").json()).data
    assert responses.AuditStats.model_validate(c.get("/v1/audit/stats").json()).total >= 0


def test_constraints_the_server_enforces_are_in_the_schema() -> None:
    doc = create_app().openapi()
    schemas = doc["components"]["schemas"]
    items = schemas["IngestBody"]["properties"]["documents"]["items"]
    assert [s["$ref"].rsplit("/", 1)[1] for s in items["oneOf"]] == [
        "TextDocument", "Base64Document"]
    params = {p["name"]: p["schema"] for p in
              doc["paths"]["/v1/audit/count-proof"]["get"]["parameters"]}
    assert params["first"]["anyOf"][0]["minimum"] == 1
    assert params["last"]["anyOf"][0]["minimum"] == 1
    links = doc["paths"]["/v1/sessions"]["post"]["responses"]["201"]["links"]
    assert {"get_session", "delete_session", "post_message"} <= set(links)
    paths = doc["paths"]  # the stateful phase's create/read/delete chains
    assert set(paths["/v1/sessions/{session_id}"]["delete"]["responses"]["200"]["links"]) == {
        "get_session"}
    assert {"get_session", "delete_session"} <= set(
        paths["/v1/sessions/{session_id}"]["patch"]["responses"]["200"]["links"])
    assert set(paths["/v1/approvals"]["get"]["responses"]["200"]["links"]) == {
        "get_approval", "decide_approval"}
    assert {"remove_knowledge", "list_knowledge"} <= set(
        paths["/v1/ingest"]["post"]["responses"]["200"]["links"])


def test_feature_off_is_a_409_naming_the_setting() -> None:
    err = feature_off("undo", "undo.enabled: true")
    assert isinstance(err, ApiError) and err.status == 409 and err.code == "undo_disabled"
    assert err.fix is not None and "undo.enabled: true" in err.fix


def test_schema_valid_requests_are_accepted_and_invalid_ones_get_422(make_api) -> None:
    api: Api = make_api()
    c = api.client
    both = {"documents": [{"name": "a.txt", "content": "x", "content_base64": "eA=="}]}
    neither = {"documents": [{"name": "a.txt"}]}
    bad64 = {"documents": [{"name": "a.pdf", "content_base64": "not base64!"}]}
    for body in (both, neither, bad64):
        assert c.post("/v1/ingest", json=body).status_code == 422
    assert c.get("/v1/audit/count-proof", params={"first": 0, "last": 0}).status_code == 422
    assert c.get("/v1/audit/events", params={"since": "0001-01-01"}).status_code == 200
    assert c.get("/v1/audit/events", params={"since": "2026-01-01t00:00:60z"}).status_code == 200
    for far in ("999999999999", "999999999999w"):  # year 33658 / before year 1: was a 500
        assert c.get("/v1/intel/report", params={"since": far, "until": far,
                                                 "format": "md"}).status_code == 200
    assert c.post("/v1/sessions/s1/undo", json={"n": 2.0, "dry_run": True}).status_code in (
        200, 404)  # 2.0 is the integer 2 (JSON Schema), never a 422
    assert c.post("/v1/sessions/s1/messages",
                  json={"content": "hi", "temperature": False}).status_code == 422


def test_405_names_every_method_of_the_path(make_api) -> None:
    c = make_api().client
    r = c.request("PUT", "/v1/sessions/abc")
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET, PATCH"
    assert r.json()["error"]["code"] == "http_405"


def test_created_session_can_be_read_renamed_and_deleted(make_api) -> None:
    c = make_api().client
    sid = c.post("/v1/sessions", json={}).json()["id"]
    assert c.get(f"/v1/sessions/{sid}").status_code == 200
    assert c.patch(f"/v1/sessions/{sid}", json={"name": "renamed"}).status_code == 200
    assert c.delete("/v1/sessions/renamed").status_code == 200
    assert c.get(f"/v1/sessions/{sid}").status_code == 404


def test_a_session_gone_between_check_and_use_is_a_404_not_a_503() -> None:
    # DELETE /v1/sessions/0 twice at once: the second one's store.require() raised a
    # MemoryStoreError, answered 503 (schemathesis, seed 4242)
    from bastion.errors import MemoryStoreError
    from bastion.memory.store import SessionNotFound
    from bastion.server.errors import status_for

    err = SessionNotFound("no session named '0'", fix="list them with: bastion sessions list")
    assert status_for(err) == 404 and isinstance(err, MemoryStoreError)

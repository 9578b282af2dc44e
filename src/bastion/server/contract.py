"""The API contract: the error schema, the statuses and content types each route documents.

Routes declare what they can answer with small helpers instead of hand-written dicts::

    @router.delete("/things/{id}", responses=errors(404, 409))
    @router.post("/things/watch", responses=sse("thing events"))

``create_app`` adds :data:`AUTH_ERRORS` (401 missing/wrong key, 403 scope, 429 quota, 503 no
token configured or still starting) to every token-protected router, and
:func:`install_openapi` replaces FastAPI's default 422 body (``HTTPValidationError``) with
:class:`ErrorBody`, the shape every error of this API has (:mod:`bastion.server.errors`).
A feature that is switched off answers :func:`feature_off` (409 naming its setting).
``tests/unit/server/test_contract.py`` fails when a route lacks its documented errors;
``tests/integration/server/test_schemathesis.py`` checks the whole document against a live
server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, get_args

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bastion.server.errors import ApiError

SSE = "text/event-stream"


class ApiModel(BaseModel):
    """Base of every request body: types exactly as the schema says.

    No ``"1"`` for 1, no ``false`` for 0.0; but a whole JSON number (``3.0``) is an integer,
    as in JSON Schema. Subclasses set ``extra`` (``forbid``, or ``ignore`` for OpenAI's shapes).
    """

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if (field is not None and isinstance(value, float) and value.is_integer()
                    and _takes_int(field.annotation)):
                out[name] = int(value)
        return out


def _takes_int(annotation: Any) -> bool:
    return annotation is int or int in get_args(annotation)


class ErrorDetail(BaseModel):
    """What went wrong, on one line, and what to do about it."""

    message: str = Field(description="one line; ends with '(fix: ...)' when there is a fix")
    type: str = Field(description="OpenAI-style class, e.g. invalid_request_error")
    code: str | None = Field(description="machine-readable code, e.g. session_not_found")
    param: str | None = Field(description="the request field at fault, if any")
    fix: str | None = Field(description="what the caller can do about it")


class ErrorBody(BaseModel):
    """Every error response of the API: ``{"error": {...}}`` (OpenAI's shape plus ``fix``)."""

    error: ErrorDetail


DESCRIPTIONS: dict[int, str] = {
    400: "The request is well-formed but cannot be done as asked (the error names the field)",
    401: "Missing or wrong API token",
    403: "Not allowed for this key or by policy",
    404: "No such resource",
    409: "Conflicts with the server's state: it exists, is busy, or the feature is switched "
         "off (the fix names the setting)",
    413: "The request body is too large",
    422: "The request does not match the schema (the error names the field)",
    429: "Too many requests; retry after the Retry-After header",
    502: "The model or an upstream server failed",
    503: "A component is unavailable, the API has no token configured, or it is starting",
}

AUTH_STATUSES = (401, 403, 429, 503)
"""What every token-protected route can answer before it runs (``deps.authenticate``): no or a
wrong key, a key without the route's scope, a used-up quota, no token configured/starting."""


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Return ``responses=`` documenting these error statuses with :class:`ErrorBody`."""
    return {s: {"model": ErrorBody, "description": DESCRIPTIONS[s]} for s in statuses}


AUTH_ERRORS = errors(*AUTH_STATUSES)


SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "one server-sent event (OpenAPI 3.1: the schema describes each event)",
    "properties": {
        "event": {"type": "string", "description": "the event name, e.g. text or done"},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "a JSON object (OpenAI chunks end in [DONE])"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["data"],
}


_EVENT_MODELS: dict[str, type[BaseModel]] = {}
"""The models of event payloads that :func:`sse` routes name (added to the components)."""


def sse_schema(events: Mapping[str, type[BaseModel]] | None = None) -> dict[str, Any]:
    """Return the schema of one event of a stream whose events are ``events``.

    ``events`` maps each event name (``event: NAME``) to the model of its ``data``, which the
    schema names with ``contentSchema`` (one ``oneOf`` branch per name). With none the events
    are unnamed (``data:`` lines only, as OpenAI's chunks).
    """
    if not events:
        return SSE_EVENT
    props = dict(SSE_EVENT["properties"])
    props["event"] = {"type": "string", "enum": list(events),
                      "description": "the event name; data is its JSON payload"}
    _EVENT_MODELS.update({m.__name__: m for m in events.values()})
    branches = [{"properties": {"event": {"const": name},
                                "data": {"contentSchema": _ref(model)}}}
                for name, model in events.items()]
    return {**SSE_EVENT, "properties": props, "required": ["event", "data"], "oneOf": branches}


def sse(description: str, *, events: Mapping[str, type[BaseModel]] | None = None,
        json: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    """Return ``responses=`` for a 200 of server-sent events (or a JSON body with ``json``).

    Args:
        description: what the events are (and when the JSON body comes instead).
        events: each event name the stream sends (``event: NAME``), in the order they come,
            with the model of its payload (:mod:`bastion.server.stream_events`).
        json: the model of the JSON body the route answers instead (e.g. ``stream: false``).

    """
    out = media(description, SSE, json=json)
    out[200]["content"][SSE]["schema"] = sse_schema(events)
    return out


def media(description: str, *types: str, binary: bool = False,
          json: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    """Return ``responses=`` for a 200 in these content types (text, or bytes if ``binary``).

    Args:
        description: what the body is.
        types: the media types (``text/csv``, ``audio/mpeg``, ...).
        binary: the bodies are bytes, not text.
        json: the model of the JSON body the route may answer instead.

    """
    schema = {"type": "string", "format": "binary"} if binary else {"type": "string"}
    content: dict[str, Any] = {t: {"schema": schema} for t in types}
    out: dict[str, Any] = {"description": description, "content": content}
    if json is not None:
        out["model"] = json  # FastAPI adds it as application/json, a $ref to the component
    return {200: out}


def link(operation_id: str, **parameters: str) -> dict[str, Any]:
    """Return an OpenAPI link to ``operation_id`` (for the stateful tests and generated clients).

    ``parameters`` map the target's parameters to runtime expressions, e.g.
    ``session_id="$response.body#/id"``.
    """
    return {"operationId": operation_id, "parameters": parameters}


def links(status: int, named: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return ``openapi_extra=`` adding ``named`` links to the ``status`` response."""
    return {"responses": {str(status): {"links": named}}}


TIME_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
        {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,6})?[smhdw]?$"},
        {"type": "string", "maxLength": 0, "description": "no bound"},
    ],
    "description": "Unix seconds, an ISO date or RFC 3339 date-time, or an age like 30m, 2h, 7d",
}
"""The schema of a time query parameter (``since``, ``until``): what ``parse_time`` reads."""


def feature_off(feature: str, setting: str, *, code: str | None = None) -> ApiError:
    """Return the 409 for a feature that is switched off on this server, naming its setting."""
    return ApiError(409, f"{feature} is switched off on this server",
                    code=code or f"{feature.replace(' ', '_')}_disabled",
                    fix=f"set {setting} in bastion.yaml and restart bastion serve")


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _error_ref() -> dict[str, Any]:
    return _ref(ErrorBody)


def _add_components(comps: dict[str, Any], models: Iterable[type[BaseModel]]) -> None:
    """Add ``models`` (and the models they use) to the document's schemas."""
    for model in models:
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in body.pop("$defs", {}).items():
            comps.setdefault(name, sub)
        comps.setdefault(model.__name__, body)


def _rewrite_422(schema: dict[str, Any]) -> None:
    """Point every 422 at :class:`ErrorBody` (the handler's real body), not FastAPI's default."""
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            resp = op.get("responses", {}).get("422")
            if resp is not None:
                resp["description"] = DESCRIPTIONS[422]
                resp["content"] = {"application/json": {"schema": _error_ref()}}
    comps = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)


def _no_untyped_json(schema: dict[str, Any]) -> None:
    """Drop the empty ``application/json`` FastAPI adds beside a route's own media types.

    A route answering a ``Response`` itself (audio, CSV, SSE) gets the default JSON response
    class's media type with no schema; it never answers JSON unless ``json=`` said so.
    """
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            for code, resp in op.get("responses", {}).items():
                content = resp.get("content", {})
                if (int(code) < 400 and len(content) > 1
                        and content.get("application/json", {}).get("schema") in ({}, None)):
                    content.pop("application/json", None)


def _body_errors(schema: dict[str, Any]) -> None:
    """Document 400 on routes with a body: a body that cannot be decoded at all gets one."""
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if isinstance(op, dict) and "requestBody" in op and "400" not in op["responses"]:
                op["responses"]["400"] = {
                    "description": DESCRIPTIONS[400],
                    "content": {"application/json": {"schema": _error_ref()}},
                }


def openapi_schema(api: FastAPI) -> dict[str, Any]:
    """Return (and cache) the API's OpenAPI document with the contract's rewrites applied."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version,
                             openapi_version=api.openapi_version, description=api.description,
                             routes=api.routes)
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        _add_components(comps, [ErrorBody, *_EVENT_MODELS.values()])
        _rewrite_422(schema)
        _no_untyped_json(schema)
        _body_errors(schema)
        api.openapi_schema = schema
    return api.openapi_schema


def install_openapi(api: FastAPI) -> None:
    """Make ``api.openapi()`` return the contract's document (see :func:`openapi_schema`)."""
    def build() -> dict[str, Any]:
        return openapi_schema(api)

    api.openapi = build  # type: ignore[method-assign]

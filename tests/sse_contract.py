"""Checks a streamed event against the OpenAPI document of the server that sent it."""

from __future__ import annotations

from typing import Any

import jsonschema

SSE = "text/event-stream"


def check_event(doc: dict[str, Any], method: str, path: str, name: str,
                data: dict[str, Any]) -> None:
    """Fail unless ``data`` is valid for event ``name`` of the route and every key is named.

    The route's event schema names each event's payload with ``contentSchema``; the payload
    must validate against it, and carry no field the schema does not document.
    """
    event = doc["paths"][path][method]["responses"]["200"]["content"][SSE]["schema"]
    branch = next((b for b in event["oneOf"] if b["properties"]["event"]["const"] == name),
                  None)
    assert branch is not None, f"{method.upper()} {path}: event {name!r} is not documented"
    ref = branch["properties"]["data"]["contentSchema"]["$ref"]
    jsonschema.validate(data, {"$ref": ref, "components": doc["components"]})
    model = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    undocumented = set(data) - set(model["properties"])
    assert not undocumented, f"{name}: fields {sorted(undocumented)} are not documented"

"""Core routes: health, the OpenAPI schema, and the OpenAI-compatible models and chat API."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from bastion import __version__
from bastion.app import App
from bastion.server._completions import chat_completions, model_names, unknown_model
from bastion.server._openai import AGENT_MODEL, SESSION_HEADER, ChatCompletionRequest
from bastion.server.contract import errors, sse
from bastion.server.deps import BastionApp
from bastion.server.responses import ChatCompletion, Health, ModelEntry, ModelList

public_router = APIRouter(tags=["health"])
router = APIRouter(tags=["openai"])

_STARTED = int(time.time())


@public_router.get("/health", summary="Liveness (no token needed)")
async def health(request: Request) -> Health:
    """Return ``{"status": "ok"}`` once the app is assembled, ``starting`` before."""
    ready = getattr(request.app.state, "bastion", None) is not None
    return Health(status="ok" if ready else "starting", version=__version__)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> dict[str, Any]:
    """Return the OpenAPI schema of this API."""
    return request.app.openapi()  # type: ignore[no-any-return]


def _model_entry(name: str, app: App) -> ModelEntry:
    owner = "bastion" if name == AGENT_MODEL else f"bastion:{app.config.model.backend}"
    return ModelEntry(id=name, created=_STARTED, owned_by=owner)


@router.get("/v1/models", summary="List models (OpenAI-compatible)")
async def list_models(app: BastionApp) -> ModelList:
    """List ``bastion-agent`` (the agent with tools) and the backend model (pass-through)."""
    return ModelList(data=[_model_entry(n, app) for n in model_names(app)])


@router.get("/v1/models/{model_id}", summary="Describe one model", responses=errors(404))
async def get_model(model_id: str, app: BastionApp) -> ModelEntry:
    """Return one model, or 404 with the list of models."""
    if model_id not in model_names(app):
        raise unknown_model(model_id, app)
    return _model_entry(model_id, app)


@router.post(
    "/v1/chat/completions",
    summary="Chat completions (OpenAI-compatible; stream via SSE)",
    response_model=None,
    responses=sse("a chat.completion object, or with stream: true SSE chunks "
                  "(data: {chat.completion.chunk}, then data: [DONE])", json=ChatCompletion)
    | errors(400, 404, 409, 502),
    openapi_extra={
        "parameters": [{
            "name": SESSION_HEADER, "in": "header", "required": False,
            "schema": {"type": "string"},
            "description": "bastion-agent: continue this session",
        }],
    },
)
async def post_chat_completions(
    body: ChatCompletionRequest, request: Request, app: BastionApp
) -> Response:
    """Run ``bastion-agent`` (the agent, tools through the gateway) or pass through to the model.

    ``bastion-agent`` answers the last user message. Earlier messages are the context, unless
    a session id is given (``X-Bastion-Session`` header, ``session_id``, or ``user``, which is
    hashed into an id when it is not one): then the session's stored history is used (the
    request's earlier messages only seed a new session).
    Tool steps appear in the extra ``bastion`` field of chunks / the completion.
    """
    return await chat_completions(request, app, body)

"""Installed GGUF models: list, pull (SSE), switch and delete; each needs ``models:admin``.

``GET /v1/models/pulled``, ``POST /v1/models/pull``, ``POST /v1/models/use``,
``DELETE /v1/models/pulled/{name}``.

``GET /v1/models`` keeps OpenAI's shape and lists what the API can answer with (see
:mod:`bastion.server.routes.core`); the models in ``<home>/models`` are listed here instead,
with their manifests. ``POST /v1/models/pull`` streams the pull's progress as server-sent
events: ``progress`` (file, done, total, rate, eta_s), then ``done`` (the manifest) or ``error``
(message, fix). The hub is the server's ``HF_ENDPOINT``; the token is ``HF_TOKEN`` or
``model.hub_token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field

from bastion.app import App
from bastion.errors import BastionError
from bastion.llm import store
from bastion.server.contract import ApiModel, errors, sse
from bastion.server.deps import BastionApp
from bastion.server.errors import ApiError
from bastion.server.responses import PulledDeleted, PulledList, PulledModel
from bastion.server.sse import sse_event, sse_response
from bastion.server.stream_events import PULL_EVENTS

router = APIRouter(prefix="/v1/models", tags=["models"])


class PullBody(ApiModel):
    """``POST /v1/models/pull``: what to pull."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="owner/repo[:QUANT or :FILE.gguf]", max_length=300)


def _entry(m: store.Manifest, app: App) -> PulledModel:
    current = app.config.model.path
    in_use = current is not None and current.expanduser().resolve() == \
        store.model_path(m).resolve()
    data = m.to_json()
    data.update(id=m.name, object="model", created=int(m.created), owned_by="bastion:pulled",
                in_use=in_use)
    return PulledModel.model_validate(data)


@router.get("/pulled", summary="List the models in <home>/models with their manifests")
async def list_pulled(app: BastionApp) -> PulledList:
    """Return every installed model (pulled or imported): sha256, size, repo, revision, files."""
    return PulledList(data=[_entry(m, app) for m in store.installed()])


@router.delete("/pulled/{name}", summary="Delete an installed model (not the one in use)",
               responses=errors(404, 409))
async def remove_pulled(name: str, app: BastionApp) -> PulledDeleted:
    """Delete ``<home>/models/<name>``, as ``bastion model rm`` does; 409 for the model in use."""
    import shutil

    try:
        m = store.read_manifest(name)
    except BastionError as exc:
        raise ApiError(404, exc.message, code="model_not_found", fix=exc.fix) from exc
    entry = _entry(m, app)
    if entry.in_use:
        raise ApiError(409, f"{name} is the model in use (model.path)", code="model_in_use",
                       fix="switch first: bastion model use OTHER, then restart bastion serve")
    await asyncio.to_thread(shutil.rmtree, store.model_dir(name))
    return PulledDeleted(id=name, size=m.size)


class UseBody(ApiModel):
    """``POST /v1/models/use``: which installed model answers from the next start on."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="an installed model's name (GET /v1/models/pulled)",
                       min_length=1, max_length=300)


class UseAnswer(ApiModel):
    """What ``POST /v1/models/use`` changed."""

    id: str = Field(description="the model now named by model.path")
    object: str = "model"
    restart: bool = Field(description="true: the running server still answers with the old "
                          "model until bastion serve is restarted")
    message: str


@router.post("/use", summary="Switch the model (bastion model use): model.path in bastion.yaml",
             responses=errors(404, 409))
async def use_model(body: UseBody, app: BastionApp) -> UseAnswer:
    """Point ``model.backend/path/name`` at an installed model, as ``bastion model use`` does."""
    try:
        m = store.read_manifest(body.model)
    except BastionError as exc:
        raise ApiError(404, exc.message, code="model_not_found", fix=exc.fix) from exc
    try:
        await asyncio.to_thread(store.use, m)
    except BastionError as exc:  # its files changed since they were hashed, or no config file
        raise ApiError(409, exc.message, code="model_unusable", fix=exc.fix) from exc
    running = _entry(m, app).in_use
    msg = (f"{m.name} is the model in use" if running else
           f"bastion.yaml now names {m.name}; restart bastion serve to answer with it")
    return UseAnswer(id=m.name, restart=not running, message=msg)


def _token(app: App) -> str | None:
    ref = app.config.model.hub_token
    if os.environ.get("HF_TOKEN") or not ref or app.secrets is None:
        return None
    return app.secrets.resolve(ref)


@router.post("/pull", summary="Pull a GGUF model from the Hugging Face Hub (progress as SSE)",
             response_class=StreamingResponse,
             responses=sse("SSE: progress events, then done (the manifest) or error (message, "
                           "fix)", events=PULL_EVENTS))
async def pull_model(body: PullBody, app: BastionApp) -> StreamingResponse:
    """Stream ``progress`` events, then ``done`` with the manifest or ``error`` with the fix."""
    from bastion.hardware import recommend
    from bastion.llm.native_build import detect_hardware
    from bastion.llm.pull import Progress, parse_spec, pull

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def report(p: Progress) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("progress", {
            "file": p.file, "done": p.done, "total": p.total, "rate": round(p.rate),
            "eta_s": None if p.eta_s is None else round(p.eta_s, 1)}))

    def work() -> None:
        try:
            _, selector = parse_spec(body.model)
            quant = None if selector else recommend(detect_hardware()).quant
            m = pull(body.model, token=_token(app), recommended=quant, report=report)
            item: tuple[str, dict[str, Any]] = ("done", m.to_json())
        except BastionError as exc:
            item = ("error", {"message": app.redactor.text(exc.message), "fix": exc.fix})
        loop.call_soon_threadsafe(queue.put_nowait, item)

    task = loop.run_in_executor(None, work)

    async def events() -> AsyncIterator[str]:
        while True:
            name, data = await queue.get()
            yield sse_event(name, data)
            if name != "progress":
                break
        with contextlib.suppress(Exception):
            await task

    return sse_response(events())

"""Memory routes: list/rename/delete/export sessions, semantic search, document ingestion.

Reading a session's messages (``GET /v1/sessions/{id}``) and chatting in it live in
``routes/sessions.py``; this module adds the management around them. Every route needs
the API token (added by ``create_app``). Documents are sent in the request body, never
read from a server path, so the API cannot be used to pull arbitrary files from the host.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from bastion.app import App
from bastion.memory.persistent import PersistentMemory
from bastion.server.deps import get_app
from bastion.server.errors import ApiError

router = APIRouter(prefix="/v1", tags=["memory"])

SessionKey = Path(min_length=1, max_length=200, description="session name or id")
DocKey = Path(min_length=1, max_length=1000, description="document id or source")
FormatQuery = Query("json", description="json or markdown")
AppDep = Depends(get_app)
MAX_INGEST_BYTES = 25 * 1024 * 1024


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rename(_Body):
    """``PATCH /v1/sessions/{id}``."""

    name: str = Field(min_length=1, max_length=200)


class SearchBody(_Body):
    """``POST /v1/search``."""

    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(default=10, ge=1, le=100)
    session: str | None = Field(default=None, description="only this session (name or id)")
    documents: bool = Field(default=True, description="include ingested documents")


class Document(_Body):
    """One document to ingest: text ``content`` or ``content_base64`` (PDF)."""

    name: str = Field(min_length=1, max_length=500, description="file name; its extension "
                      "picks the reader (.md, .html, .pdf, .py, .txt, ...)")
    content: str | None = None
    content_base64: str | None = None


class IngestBody(_Body):
    """``POST /v1/ingest``."""

    documents: list[Document] = Field(min_length=1, max_length=200)


def _memory(app: App) -> PersistentMemory:
    mem = app.memory
    if not isinstance(mem, PersistentMemory):
        raise ApiError(409, "memory is switched off on this server", code="memory_disabled",
                       fix="set memory.enabled: true in bastion.yaml and restart")
    return mem


def _exists(mem: PersistentMemory, key: str) -> None:
    if mem.store.resolve(key) is None:
        raise ApiError(404, f"no session {key}", code="session_not_found",
                       fix="list sessions with GET /v1/sessions")


@router.get("/sessions", summary="List sessions")
async def list_sessions(app: App = AppDep) -> dict[str, Any]:
    """Return every stored session, most recently used first."""
    mem = _memory(app)
    rows = await asyncio.to_thread(mem.sessions)
    return {"object": "list", "data": [r.to_dict() for r in rows]}


@router.patch("/sessions/{session_id}", summary="Rename a session")
async def rename_session(
    body: Rename, session_id: str = SessionKey, app: App = AppDep
) -> dict[str, Any]:
    """Rename a session; 404 if unknown, 409 if the name is taken."""
    mem = _memory(app)
    _exists(mem, session_id)
    if mem.store.resolve(body.name) is not None:
        raise ApiError(409, f"a session named {body.name} already exists", code="session_exists",
                       fix="pick another name")
    info = await asyncio.to_thread(mem.rename, session_id, body.name)
    return info.to_dict()


@router.delete("/sessions/{session_id}", summary="Delete a session")
async def delete_session(
    session_id: str = SessionKey, app: App = AppDep
) -> dict[str, Any]:
    """Delete a session, its messages and their search entries."""
    mem = _memory(app)
    _exists(mem, session_id)
    info = await asyncio.to_thread(mem.delete, session_id)
    return {"deleted": True, **info.to_dict()}


@router.get("/sessions/{session_id}/export", summary="Export a session", response_model=None)
async def export_session(
    session_id: str = SessionKey,
    format: Literal["json", "markdown"] = FormatQuery,  # noqa: A002 - the public parameter
    app: App = AppDep,
) -> Response:
    """Return the whole session as JSON or Markdown (secrets redacted)."""
    mem = _memory(app)
    _exists(mem, session_id)
    text = app.redactor.text(await asyncio.to_thread(mem.export, session_id, format))
    if format == "markdown":
        return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")
    return Response(text, media_type="application/json")


@router.post("/search", summary="Search messages and documents by meaning")
async def search(body: SearchBody, app: App = AppDep) -> dict[str, Any]:
    """Return the best matches with scores and where they came from."""
    mem = _memory(app)
    if body.session is not None:
        _exists(mem, body.session)
    results = await asyncio.to_thread(
        mem.search, body.query, body.k, session=body.session, documents=body.documents
    )
    data = []
    for r in results:
        item = r.to_dict()
        item["text"] = app.redactor.text(r.text)
        if r.session_id:
            item["session_url"] = f"/v1/sessions/{r.session_id}"
        data.append(item)
    return {"object": "list", "data": data}


def _decode(doc: Document) -> bytes:
    if (doc.content is None) == (doc.content_base64 is None):
        raise ApiError(400, f"document {doc.name}: give exactly one of content, content_base64",
                       code="invalid_document", param="documents")
    if doc.content is not None:
        return doc.content.encode("utf-8")
    try:
        return base64.b64decode(doc.content_base64 or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"document {doc.name}: content_base64 is not valid base64",
                       code="invalid_document", param="documents") from exc


@router.post("/ingest", summary="Add documents to the knowledge base")
async def ingest(body: IngestBody, app: App = AppDep) -> dict[str, Any]:
    """Chunk, embed and store documents; unchanged ones (same content hash) are skipped."""
    mem = _memory(app)
    blobs = [(d.name, _decode(d)) for d in body.documents]
    if sum(len(b) for _, b in blobs) > MAX_INGEST_BYTES:
        raise ApiError(413, "documents are larger than 25 MiB in total", code="too_large")
    ingestor = await asyncio.to_thread(mem.ingestor)

    def run() -> list[dict[str, Any]]:
        out = []
        for name, data in blobs:
            f = ingestor.ingest_bytes(name, data)
            out.append({"source": f.source, "status": f.status, "chunks": f.chunks,
                        "detail": f.detail})
        return out

    files = await asyncio.to_thread(run)
    return {"object": "list", "data": files}


@router.get("/knowledge", summary="List ingested documents")
async def list_knowledge(app: App = AppDep) -> dict[str, Any]:
    """Return every ingested document."""
    mem = _memory(app)
    docs = await asyncio.to_thread(mem.store.documents)
    return {"object": "list", "data": [d.to_dict() for d in docs]}


@router.delete("/knowledge/{doc_id}", summary="Remove an ingested document")
async def remove_knowledge(
    doc_id: str = DocKey, app: App = AppDep
) -> dict[str, Any]:
    """Forget a document (by id or source name) and its chunks."""
    mem = _memory(app)
    if mem.store.document(doc_id) is None:
        raise ApiError(404, f"no ingested document {doc_id}", code="document_not_found",
                       fix="list them with GET /v1/knowledge")
    ingestor = await asyncio.to_thread(mem.ingestor)
    doc = await asyncio.to_thread(ingestor.remove, doc_id)
    return {"deleted": True, **doc.to_dict()}

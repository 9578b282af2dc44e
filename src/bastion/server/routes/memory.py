"""Memory routes: list/rename/delete/export sessions, semantic search, document ingestion.

Reading a session's messages (``GET /v1/sessions/{id}``) and chatting in it live in
``routes/sessions.py``; this module adds the management around them. Every route needs
the API token (added by ``create_app``). Documents are sent in the request body, never
read from a server path, so the API cannot be used to pull arbitrary files from the host.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import ConfigDict, Field

from bastion.app import App
from bastion.memory.persistent import PersistentMemory
from bastion.security.identity import owner_name
from bastion.server._turns import created_sessions
from bastion.server.contract import ApiModel, errors, feature_off, link, links, media
from bastion.server.deps import get_app
from bastion.server.errors import ApiError
from bastion.server.responses import (
    DocumentDeleted,
    DocumentInfo,
    DocumentList,
    IngestedFile,
    IngestResult,
    SearchHit,
    SearchResults,
    SessionDeleted,
    SessionExport,
    SessionInfo,
    SessionList,
)

router = APIRouter(prefix="/v1", tags=["memory"])

SessionKey = Path(min_length=1, max_length=200, description="session name or id")
DocKey = Path(min_length=1, max_length=1000, description="document id or source")
FormatQuery = Query("json", description="json or markdown")
AppDep = Depends(get_app)
MAX_INGEST_BYTES = 25 * 1024 * 1024


class _Body(ApiModel):
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


BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class _Document(_Body):
    name: str = Field(min_length=1, max_length=500, description="file name; its extension "
                      "picks the reader (.md, .html, .pdf, .py, .txt, ...)")


class TextDocument(_Document):
    """A document given as text."""

    content: str


class Base64Document(_Document):
    """A document given as bytes in base64 (PDF and other binary formats)."""

    content_base64: str = Field(pattern=BASE64)


Document = Annotated[TextDocument | Base64Document, Field(union_mode="left_to_right")]
"""One document to ingest: exactly one of text ``content`` or ``content_base64``."""


def _one_of(schema: dict[str, Any]) -> None:
    items = schema["properties"]["documents"]["items"]
    items["oneOf"] = items.pop("anyOf")  # extra fields are forbidden: at most one matches


class IngestBody(_Body):
    """``POST /v1/ingest``."""

    model_config = ConfigDict(json_schema_extra=_one_of)

    documents: list[Document] = Field(min_length=1, max_length=200)


def _memory(app: App, *, semantic: bool = False) -> PersistentMemory:
    mem = app.memory
    if not isinstance(mem, PersistentMemory):
        raise feature_off("memory", "memory.enabled: true")
    if semantic and not mem.config.semantic:
        raise feature_off("semantic memory", "memory.semantic: true")
    return mem


def _exists(mem: PersistentMemory, key: str) -> None:
    if mem.store.resolve(key) is None:
        raise ApiError(404, f"no session {key}", code="session_not_found",
                       fix="list sessions with GET /v1/sessions")


@router.get("/sessions", summary="List sessions", responses=errors(409))
async def list_sessions(app: App = AppDep) -> SessionList:
    """Return every stored session, most recently used first."""
    mem = _memory(app)
    rows = await asyncio.to_thread(mem.sessions)
    return SessionList(data=[SessionInfo.model_validate(r.to_dict()) for r in rows])


@router.patch("/sessions/{session_id}", summary="Rename a session", responses=errors(404, 409),
              operation_id="rename_session", openapi_extra=links(200, {
                  name: link(name, session_id="$response.body#/id")
                  for name in ("get_session", "export_session", "delete_session")}))
async def rename_session(
    body: Rename, session_id: str = SessionKey, app: App = AppDep
) -> SessionInfo:
    """Rename a session; 404 if unknown, 409 if the name is taken."""
    mem = _memory(app)
    _exists(mem, session_id)
    if mem.store.resolve(body.name) is not None:
        raise ApiError(409, f"a session named {body.name} already exists", code="session_exists",
                       fix="pick another name")
    info = await asyncio.to_thread(mem.rename, session_id, body.name)
    return SessionInfo.model_validate(info.to_dict())


@router.delete("/sessions/{session_id}", summary="Delete a session", responses=errors(404, 409),
               operation_id="delete_session", openapi_extra=links(200, {
                   "get_session": link("get_session", session_id="$request.path.session_id")}))
async def delete_session(
    request: Request, session_id: str = SessionKey, app: App = AppDep
) -> SessionDeleted:
    """Delete a session, its messages and their search entries."""
    mem = _memory(app)
    _exists(mem, session_id)
    info = await asyncio.to_thread(mem.delete, session_id)
    gone = {(owner_name(), k) for k in (session_id, info.id, info.name)}
    created = created_sessions(request)
    created.difference_update(gone)
    return SessionDeleted.model_validate(info.to_dict())


@router.get("/sessions/{session_id}/export", summary="Export a session", response_model=None,
            responses=media("the session as JSON or Markdown", "text/markdown", json=SessionExport)
            | errors(404, 409), operation_id="export_session")
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


@router.post("/search", summary="Search messages and documents by meaning",
             responses=errors(404, 409))
async def search(body: SearchBody, app: App = AppDep) -> SearchResults:
    """Return the best matches with scores and where they came from."""
    mem = _memory(app, semantic=True)
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
        data.append(SearchHit.model_validate(item))
    return SearchResults(data=data)


def _decode(doc: TextDocument | Base64Document) -> bytes:
    if isinstance(doc, TextDocument):
        return doc.content.encode("utf-8")
    return base64.b64decode(doc.content_base64, validate=True)  # the pattern checked it


@router.post("/ingest", summary="Add documents to the knowledge base",
             responses=errors(409, 413), operation_id="ingest",
             openapi_extra=links(200, {"remove_knowledge": link(
                 "remove_knowledge", doc_id="$response.body#/data/0/source"),
                 "list_knowledge": link("list_knowledge")}))
async def ingest(body: IngestBody, app: App = AppDep) -> IngestResult:
    """Chunk, embed and store documents; unchanged ones (same content hash) are skipped."""
    mem = _memory(app, semantic=True)
    blobs = [(d.name, _decode(d)) for d in body.documents]
    if sum(len(b) for _, b in blobs) > MAX_INGEST_BYTES:
        raise ApiError(413, "documents are larger than 25 MiB in total", code="too_large")
    ingestor = await asyncio.to_thread(mem.ingestor)

    def run() -> list[IngestedFile]:
        out = []
        for name, data in blobs:
            f = ingestor.ingest_bytes(name, data)
            out.append(IngestedFile(source=f.source, status=f.status, chunks=f.chunks,
                                    detail=f.detail))
        return out

    return IngestResult(data=await asyncio.to_thread(run))


@router.get("/knowledge", summary="List ingested documents", responses=errors(409),
            operation_id="list_knowledge")
async def list_knowledge(app: App = AppDep) -> DocumentList:
    """Return every ingested document."""
    mem = _memory(app)
    docs = await asyncio.to_thread(mem.store.documents)
    return DocumentList(data=[DocumentInfo.model_validate(d.to_dict()) for d in docs])


@router.delete("/knowledge/{doc_id}", summary="Remove an ingested document",
               responses=errors(404, 409), operation_id="remove_knowledge")
async def remove_knowledge(
    doc_id: str = DocKey, app: App = AppDep
) -> DocumentDeleted:
    """Forget a document (by id or source name) and its chunks."""
    mem = _memory(app, semantic=True)
    if mem.store.document(doc_id) is None:
        raise ApiError(404, f"no ingested document {doc_id}", code="document_not_found",
                       fix="list them with GET /v1/knowledge")
    ingestor = await asyncio.to_thread(mem.ingestor)
    doc = await asyncio.to_thread(ingestor.remove, doc_id)
    return DocumentDeleted.model_validate(doc.to_dict())

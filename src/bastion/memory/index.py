"""The semantic index: stored messages and document chunks, embedded and kept in Chroma."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bastion.memory._chunk import chunk_prose
from bastion.memory.embeddings import Embedder
from bastion.memory.store import SessionStore, StoredMessage
from bastion.memory.vectors import DOCUMENTS, MESSAGES, Hit, Metadata, VectorStore
from bastion.security.identity import owner_filter

# Messages longer than this are split so their later parts stay searchable too.
MESSAGE_CHUNK_CHARS = 1000
# Tool results shorter than this carry little worth recalling ("ok", "[]", exit codes).
MIN_TOOL_RESULT_CHARS = 40


def worth_indexing(msg: StoredMessage) -> bool:
    """Return whether a stored message goes into the semantic index."""
    m = msg.message
    text = m.content.strip()
    if not text or m.role == "system":
        return False
    if m.role == "tool":
        return len(text) >= MIN_TOOL_RESULT_CHARS and not text.startswith(("error:", "denied:"))
    return True


@dataclass(slots=True, frozen=True)
class SearchResult:
    """A search hit resolved to where it came from."""

    kind: str  # "message" | "document"
    text: str
    score: float
    source: str  # session name or document path/name
    session_id: str | None = None
    message_id: int | None = None
    role: str | None = None
    where: str | None = None  # document section / line range

    def label(self) -> str:
        """Return a short citation label."""
        if self.kind == "document":
            return f"{self.source}" + (f" ({self.where})" if self.where else "")
        return f"session '{self.source}', {self.role} message #{self.message_id}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "kind": self.kind,
            "score": round(self.score, 4),
            "source": self.source,
            "session_id": self.session_id,
            "message_id": self.message_id,
            "role": self.role,
            "where": self.where,
            "text": self.text,
        }


class SemanticIndex:
    """Embeds messages and documents and searches them."""

    def __init__(self, store: SessionStore, vectors: VectorStore, embedder: Embedder) -> None:
        self.store = store
        self.vectors = vectors
        self.embedder = embedder

    def index_messages(self, messages: Sequence[StoredMessage]) -> int:
        """Embed and store ``messages`` (skipping the unremarkable); return records written."""
        ids: list[str] = []
        texts: list[str] = []
        metas: list[Metadata] = []
        for sm in messages:
            if not worth_indexing(sm):
                continue
            parts = (
                [c.text for c in chunk_prose(sm.message.content, MESSAGE_CHUNK_CHARS, 100)]
                if len(sm.message.content) > MESSAGE_CHUNK_CHARS
                else [sm.message.content]
            )
            for n, part in enumerate(parts):
                ids.append(f"m{sm.id}" if n == 0 else f"m{sm.id}-{n}")
                texts.append(part)
                metas.append({
                    "session_id": sm.session_id,
                    "message_id": sm.id,
                    "seq": sm.seq,
                    "role": sm.message.role,
                    "created_at": sm.created_at,
                })
        if ids:
            vectors = self.embedder.embed(texts)
            self.vectors.upsert(MESSAGES, ids, vectors, texts, metas)
        self.store.mark_indexed([m.id for m in messages])
        return len(ids)

    def catch_up(self, limit: int = 512) -> int:
        """Index stored messages that are not yet indexed (after a crash or an outage)."""
        total = 0
        while True:
            batch = self.store.pending(min(limit, 128))
            if not batch:
                return total
            total += self.index_messages(batch)
            limit -= len(batch)
            if limit <= 0:
                return total

    def forget_session(self, session_id: str) -> None:
        """Remove a session's messages from the index."""
        self.vectors.delete(MESSAGES, where={"session_id": session_id})

    def add_document_chunks(
        self, doc_id: str, source: str, kind: str, chunks: Sequence[tuple[str, str]],
        *, replace: bool = True,
    ) -> None:
        """Store a document's (text, where) chunks, replacing any earlier version."""
        if replace:
            self.vectors.delete(DOCUMENTS, where={"doc_id": doc_id})
        batch = 64
        for start in range(0, len(chunks), batch):
            part = chunks[start : start + batch]
            texts = [t for t, _ in part]
            vectors = self.embedder.embed(texts)
            self.vectors.upsert(
                DOCUMENTS,
                [f"{doc_id}-{start + i}" for i in range(len(part))],
                vectors,
                texts,
                [{"doc_id": doc_id, "source": source, "kind": kind, "chunk": start + i,
                  "where": w} for i, (_, w) in enumerate(part)],
            )

    def forget_document(self, doc_id: str) -> None:
        """Remove a document's chunks."""
        self.vectors.delete(DOCUMENTS, where={"doc_id": doc_id})

    def embed_query(self, query: str) -> list[float]:
        """Return the embedding of a query."""
        return self.embedder.embed([query])[0]

    def search_messages(
        self, vector: Sequence[float], k: int, *, session_id: str | None = None,
        exclude_session: str | None = None,
    ) -> list[SearchResult]:
        """Return the best message hits (optionally within / outside one session)."""
        where: dict[str, Any] | None = None
        if session_id is not None:
            where = {"session_id": session_id}
        elif exclude_session is not None:
            where = {"session_id": {"$ne": exclude_session}}
        hits = self.vectors.query(MESSAGES, vector, k, where)
        names = self.store.session_names(list({str(h.metadata.get("session_id")) for h in hits}))
        out = []
        for h in hits:
            sid = str(h.metadata.get("session_id"))
            if sid not in names:  # a session deleted by another process since
                continue
            out.append(SearchResult(
                "message", h.text, h.score, names[sid], session_id=sid,
                message_id=int(h.metadata.get("message_id", 0)),
                role=str(h.metadata.get("role", "")),
            ))
        return out

    def search_documents(self, vector: Sequence[float], k: int) -> list[SearchResult]:
        """Return the best document-chunk hits (of the caller's own documents)."""
        hits = self.vectors.query(DOCUMENTS, vector, k)
        if owner_filter() is not None:
            mine = self.store.visible_documents(list({str(h.metadata.get("doc_id"))
                                                      for h in hits}))
            hits = [h for h in hits if str(h.metadata.get("doc_id")) in mine]
        return [_doc_result(h) for h in hits]

    def search(
        self, query: str, k: int = 10, *, messages: bool = True, documents: bool = True,
        session_id: str | None = None,
    ) -> list[SearchResult]:
        """Search messages and documents together; best first."""
        vec = self.embed_query(query)
        results: list[SearchResult] = []
        if messages:
            results += self.search_messages(vec, k, session_id=session_id)
        if documents and session_id is None:
            results += self.search_documents(vec, k)
        results.sort(key=lambda r: r.score, reverse=True)
        return results[:k]


def _doc_result(h: Hit) -> SearchResult:
    return SearchResult(
        "document", h.text, h.score, str(h.metadata.get("source", "?")),
        where=str(h.metadata.get("where") or "") or None,
    )

"""The semantic index: stored messages and document chunks, embedded and kept in Chroma."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bastion.memory._chunk import chunk_prose
from bastion.memory.embeddings import Embedder
from bastion.memory.store import SessionStore, StoredMessage
from bastion.memory.vectors import DOCUMENTS, MESSAGES, Hit, Metadata, VectorStore
from bastion.security.identity import ADMIN_OWNER, owner_filter, owner_name

# Messages longer than this are split so their later parts stay searchable too.
MESSAGE_CHUNK_CHARS = 1000
# Tool results shorter than this carry little worth recalling ("ok", "[]", exit codes).
MIN_TOOL_RESULT_CHARS = 40
# Present once every record carries its owner in the metadata (records of older versions
# are tagged on first search: sessions' and documents' owners from the store).
OWNERS_MARK = ".bastion.owners-v1"


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
        self._owners_tagged = False

    def tag_owners(self) -> int:
        """Give records indexed before owners existed an ``owner`` (once per store)."""
        mark = self.vectors.path / OWNERS_MARK
        if self._owners_tagged or mark.exists():
            self._owners_tagged = True
            return 0
        done = 0
        for collection, key, lookup in ((MESSAGES, "session_id", self.store.session_owners),
                                        (DOCUMENTS, "doc_id", self.store.document_owners)):
            offset = 0
            while True:
                ids, metas = self.vectors.metadatas(collection, offset, 512)
                if not ids:
                    break
                offset += len(ids)
                todo = [(i, m) for i, m in zip(ids, metas, strict=False) if "owner" not in m]
                owners = lookup(list({str(m.get(key)) for _, m in todo}))
                self.vectors.update_metadata(
                    collection, [i for i, _ in todo],
                    [{**m, "owner": owners.get(str(m.get(key)), ADMIN_OWNER)} for _, m in todo])
                done += len(todo)
        mark.write_text("1\n")
        self._owners_tagged = True
        return done

    def index_messages(self, messages: Sequence[StoredMessage]) -> int:
        """Embed and store ``messages`` (skipping the unremarkable); return records written."""
        ids: list[str] = []
        texts: list[str] = []
        metas: list[Metadata] = []
        owners = self.store.session_owners(list({sm.session_id for sm in messages}))
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
                    "owner": owners.get(sm.session_id, ADMIN_OWNER),
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
        *, replace: bool = True, owner: str | None = None,
    ) -> None:
        """Store a document's (text, where) chunks, replacing any earlier version.

        ``owner`` (default: the caller) rides in every chunk's metadata, so searches filter
        on it inside the vector query.
        """
        owner = owner or owner_name()
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
                  "where": w, "owner": owner} for i, (_, w) in enumerate(part)],
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
        conds: list[dict[str, Any]] = _owner_conds(self)
        if session_id is not None:
            conds.append({"session_id": session_id})
        elif exclude_session is not None:
            conds.append({"session_id": {"$ne": exclude_session}})
        hits = self.vectors.query(MESSAGES, vector, k, _where(conds))
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
        hits = self.vectors.query(DOCUMENTS, vector, k, _where(_owner_conds(self)))
        if owner_filter() is not None:  # and a document deleted since: gone from the store
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


def _owner_conds(index: SemanticIndex) -> list[dict[str, Any]]:
    """Return the caller's owner filter for a vector query.

    Applied before ranking, so another user's records can neither fill nor shape the
    caller's top-k.
    """
    who = owner_filter()
    if who is None:
        return []
    index.tag_owners()
    return [{"owner": who}]


def _where(conds: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not conds:
        return None
    return conds[0] if len(conds) == 1 else {"$and": conds}


def _doc_result(h: Hit) -> SearchResult:
    return SearchResult(
        "document", h.text, h.score, str(h.metadata.get("source", "?")),
        where=str(h.metadata.get("where") or "") or None,
    )

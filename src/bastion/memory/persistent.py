"""The persistent conversation memory behind the agent's ``ConversationMemory`` seam.

* ``append`` writes the message to SQLite (durable on return), then embeds it into the
  semantic index. An embedding or vector-store failure never fails the turn: the message
  stays on disk marked "not indexed", a warning is logged (``bastion.memory``) and kept in
  :attr:`PersistentMemory.problems`, and it is indexed later (``catch_up``).
* ``build_context`` windows the history by the model's own token counts and adds the
  retrieved snippets (RAG) to the system prompt, each with its source.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion import telemetry
from bastion.config import paths
from bastion.config.model import MemoryConfig
from bastion.errors import BastionError, MemoryStoreError
from bastion.memory.index import SearchResult, SemanticIndex
from bastion.memory.ingest import Ingestor
from bastion.memory.rag import RagSettings, format_snippets, retrieve
from bastion.memory.store import SessionInfo, SessionStore, StoredMessage
from bastion.memory.window import Window, context_budget, counter_for, window
from bastion.messages import Message

log = logging.getLogger("bastion.memory")

RETRY_SEMANTIC_AFTER_S = 60.0
# history() loads at least this many characters per token of budget; no tokenizer averages
# more than 8 characters a token, so the window is never starved by the shortcut.
HISTORY_CHARS_PER_TOKEN = 8


def memory_root(config: MemoryConfig) -> Path:
    """Return (and create) the memory data directory."""
    if config.path is not None:
        root = Path(config.path).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        return root
    return paths.data_dir("memory")


class PersistentMemory:
    """Sessions in SQLite, semantic memory in Chroma, windowing and RAG for the agent."""

    def __init__(
        self,
        config: MemoryConfig,
        *,
        model: Any = None,
        n_ctx: int = 4096,
        max_tokens: int = 512,
        root: Path | None = None,
    ) -> None:
        self.config = config
        self.root = Path(root) if root else memory_root(config)
        self.store = SessionStore(self.root / "memory.db")
        self.count_tokens, self.counter_name = counter_for(model)
        self.budget = context_budget(
            model, n_ctx=n_ctx, max_tokens=max_tokens, reserve=config.reserve_tokens,
            override=config.context_tokens,
        )
        self.rag_settings = RagSettings(
            k=config.k, cross_session=config.cross_session, documents=config.documents,
            min_score=config.min_score,
        )
        self.problems: collections.deque[str] = collections.deque(maxlen=20)
        self.last_window: Window | None = None
        self.last_snippets: list[SearchResult] = []
        self._index: SemanticIndex | None = None
        self._index_failed_at = 0.0
        self._rag_cache: tuple[tuple[str, str, int], list[SearchResult]] | None = None
        self._turn: dict[str, int] = {}  # session key -> row id of its latest user message
        self._caught_up = False

    # -- degradation -----------------------------------------------------------------
    def _warn(self, text: str) -> None:
        if not self.problems or self.problems[-1] != text:
            self.problems.append(text)
            log.warning("memory: %s", text)

    def semantic(self) -> SemanticIndex | None:
        """Return the semantic index, opening it on first use; None while unavailable."""
        if not self.config.semantic:
            return None
        if self._index is not None:
            return self._index
        since = time.monotonic() - self._index_failed_at
        if self._index_failed_at and since < RETRY_SEMANTIC_AFTER_S:
            return None
        try:
            self._index = self._open_semantic()
        except Exception as exc:  # whatever breaks here, the conversation goes on
            self._index_failed_at = time.monotonic()
            self._warn(f"semantic memory unavailable, conversation continues without it: "
                       f"{_describe(exc)}")
            return None
        return self._index

    def _open_semantic(self) -> SemanticIndex:
        from bastion.memory.embeddings import LazyEmbedder
        from bastion.memory.vectors import open_vectors

        vectors = open_vectors(self.root / "vectors")
        return SemanticIndex(self.store, vectors, LazyEmbedder(self.config.embedding_model))

    def require_semantic(self) -> SemanticIndex:
        """Return the semantic index or raise a one-line error (for search/ingest commands)."""
        if not self.config.semantic:
            raise MemoryStoreError(
                "semantic memory is switched off", fix="bastion config set memory.semantic true"
            )
        self._index_failed_at = 0.0
        if self._index is None:
            self._index = self._open_semantic()
        return self._index

    def _index_stored(self, stored: Sequence[StoredMessage]) -> None:
        index = self.semantic()
        if index is None:
            return
        try:
            if not self._caught_up:
                self._caught_up = True
                index.catch_up()  # messages left unindexed by a crash or an outage
            index.index_messages(stored)
        except Exception as exc:  # the message is on disk; indexing is retried later
            self._warn(f"could not index the message for search (kept on disk, will retry): "
                       f"{_describe(exc)}")
            self._index = None
            self._index_failed_at = time.monotonic()
            self._caught_up = False

    # -- the ConversationMemory seam ---------------------------------------------------
    async def history(self, session_id: str) -> list[Message]:
        """Return the session's newest messages, oldest first.

        Enough to fill the context window (at most ``history_limit``); older ones stay
        stored and searchable.
        """
        rows = await asyncio.to_thread(
            self.store.tail, session_id, min_chars=self.budget * HISTORY_CHARS_PER_TOKEN,
            limit=self.config.history_limit,
        )
        return [r.message for r in rows]

    async def transcript(
        self, session_id: str, offset: int = 0, limit: int = 100
    ) -> tuple[int, list[Message]]:
        """Return the total count and one page of the whole stored session, oldest first."""
        total, rows = await asyncio.to_thread(
            self.store.page, session_id, offset=offset, limit=limit
        )
        return total, [r.message for r in rows]

    async def record_steps(self, session_id: str, steps: dict[str, dict[str, Any]]) -> None:
        """Keep each tool step's facts with its stored tool message.

        ``steps``: call id -> risk, sandbox, decision, approval; the transcript
        (``GET /v1/sessions/{id}``) shows them again.
        """
        await asyncio.to_thread(self.store.record_steps, session_id, steps)

    async def open_session(self, key: str) -> str:
        """Return the stored id of session ``key`` (a name or an id), creating it if new."""
        return await asyncio.to_thread(self.store.ensure, key)

    async def append(self, session_id: str, message: Message) -> None:
        """Store ``message`` durably, then index it (an index failure only warns)."""
        stored = await asyncio.to_thread(self.store.append, session_id, message)
        if message.role == "user":
            self._turn[session_id] = stored.id
        if self.config.semantic:
            await asyncio.to_thread(self._index_stored, [stored])

    async def build_context(
        self, session_id: str, system: Message, history: Sequence[Message], query: str
    ) -> list[Message]:
        """Return the windowed history plus retrieved snippets in the system prompt."""
        return await asyncio.to_thread(self.context_sync, session_id, system, history, query)

    def context_sync(
        self, session_id: str, system: Message, history: Sequence[Message], query: str
    ) -> list[Message]:
        """Return what :meth:`build_context` returns, synchronously (benchmarks, tests)."""
        use_rag = self.config.rag and self.config.semantic and self.config.k > 0
        rag_budget = min(self.config.rag_tokens, self.budget // 3) if use_rag else 0
        win = window(system, history, self.budget - rag_budget, self.count_tokens)
        snippets: list[SearchResult] = []
        if use_rag:
            with telemetry.span("memory.retrieve", {"bastion.memory.k": self.config.k}) as span:
                snippets = self._retrieve(session_id, query, [m.content for m in win.messages])
                span.set("bastion.memory.snippets", len(snippets))
            block = format_snippets(snippets)
            while snippets and self.count_tokens([Message("system", block)]) > rag_budget:
                snippets = snippets[:-1]
                block = format_snippets(snippets)
            if not snippets:
                win = window(system, history, self.budget, self.count_tokens)
        self.last_window = win
        self.last_snippets = snippets
        if not snippets:
            return win.messages
        merged = Message("system", f"{system.content}\n\n{format_snippets(snippets)}")
        return [merged, *win.messages[1:]]

    def _retrieve(self, key: str, query: str, in_context: list[str]) -> list[SearchResult]:
        # one retrieval per turn: the agent rebuilds the context after every tool step
        cache_key = (key, query, self._turn.get(key, 0))
        if self._rag_cache and self._rag_cache[0] == cache_key:
            skip = {t.strip() for t in in_context}
            return [r for r in self._rag_cache[1] if r.text.strip() not in skip]
        index = self.semantic()
        if index is None:
            return []
        sid = self.store.session_id(key)
        try:
            results = retrieve(index, query, sid, self.rag_settings, skip_texts=in_context)
        except Exception as exc:  # answer without retrieved snippets rather than not at all
            self._warn(f"retrieval failed, answering without it: {_describe(exc)}")
            self._index = None
            self._index_failed_at = time.monotonic()
            return []
        self._rag_cache = (cache_key, results)
        return results

    # -- management (CLI and API) ----------------------------------------------------
    def sessions(self) -> list[SessionInfo]:
        """Return every session, most recent first."""
        return self.store.sessions()

    def session(self, key: str) -> tuple[SessionInfo, list[StoredMessage]]:
        """Return a session and all its messages."""
        info = self.store.require(key)
        return info, self.store.messages(info.id)

    def rename(self, key: str, new_name: str) -> SessionInfo:
        """Rename a session."""
        return self.store.rename(key, new_name)

    def delete(self, key: str) -> SessionInfo:
        """Delete a session, its messages and their vectors."""
        info = self.store.delete(key)
        index = self.semantic()
        if index is not None:
            try:
                index.forget_session(info.id)
            except BastionError as exc:  # search hides messages of deleted sessions anyway
                self._warn(f"could not remove the session's vectors: {exc.user_text()}")
        return info

    def export(self, key: str, fmt: str = "json") -> str:
        """Return a session as JSON or Markdown."""
        info, msgs = self.session(key)
        if fmt == "json":
            return json.dumps(
                {"session": info.to_dict(), "messages": [m.to_dict() for m in msgs]},
                indent=2, ensure_ascii=False,
            )
        if fmt in ("md", "markdown"):
            return export_markdown(info, msgs)
        raise MemoryStoreError(f"unknown export format '{fmt}'", fix="use json or markdown")

    def search(
        self, query: str, k: int = 10, *, session: str | None = None, documents: bool = True
    ) -> list[SearchResult]:
        """Search every session (or one) and the ingested documents."""
        index = self.require_semantic()
        index.catch_up(limit=10_000)
        sid = self.store.require(session).id if session else None
        return index.search(query, k, session_id=sid, documents=documents)

    def ingestor(self) -> Ingestor:
        """Return the document ingestor."""
        return Ingestor(
            self.store, self.require_semantic(), chunk_chars=self.config.chunk_chars,
            chunk_overlap=self.config.chunk_overlap,
        )

    async def aclose(self) -> None:
        """Close the stores."""
        self.store.close()
        if self._index is not None:
            self._index.vectors.close()

    def close(self) -> None:
        """Close the stores, synchronously (CLI)."""
        self.store.close()
        if self._index is not None:
            self._index.vectors.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BastionError):
        return exc.user_text()
    return f"{type(exc).__name__}: {exc}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def export_markdown(info: SessionInfo, msgs: Sequence[StoredMessage]) -> str:
    """Return a session as a readable Markdown transcript."""
    lines = [
        f"# Session: {info.name}",
        "",
        f"- id: `{info.id}`",
        f"- created: {_when(info.created_at)}",
        f"- updated: {_when(info.updated_at)}",
        f"- messages: {len(msgs)}",
        "",
    ]
    for sm in msgs:
        m = sm.message
        title = {"user": "User", "assistant": "Assistant", "tool": f"Tool result ({m.name})",
                 "system": "System"}[m.role]
        lines += [f"## {title}", "", f"<sub>#{sm.seq} · {_when(sm.created_at)}</sub>", ""]
        if m.content:
            if m.role == "tool":
                lines += ["```", m.content, "```", ""]
            else:
                lines += [m.content, ""]
        for c in m.tool_calls:
            lines += [f"Tool call `{c.name}`:", "", "```json", c.arguments_json(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"

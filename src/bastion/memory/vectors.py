"""The vector store: embedded Chroma (``PersistentClient``), safe across processes.

Chroma's embedded client keeps its HNSW index in the memory of the process that opened
it, and is not safe for several writer processes on one directory (chroma#421): a second
process's writes reach the SQLite log but not the first process's in-memory index, so its
queries silently miss them, and concurrent writers can corrupt the index.

bastion makes it safe with a lock file and a generation counter beside the data:

* every write holds an exclusive ``flock`` on ``.bastion.lock`` and bumps ``.bastion.gen``;
* every read holds a shared ``flock``;
* before any operation, a process whose client was opened at an older generation closes
  it and opens a fresh one (about 25 ms), so it sees every other process's writes.

Within one process a single ``VectorStore`` per directory is shared (``open_vectors``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion._extras import require
from bastion.errors import MemoryStoreError

MESSAGES = "bastion-messages"
DOCUMENTS = "bastion-documents"
COLLECTIONS = (MESSAGES, DOCUMENTS)

Metadata = Mapping[str, str | int | float | bool]
LOCK_TIMEOUT_S = 30.0


def _flock(fd: int, mode: int, timeout_s: float) -> None:
    """Take ``mode`` on ``fd``, waiting at most ``timeout_s`` (a stuck process never hangs us)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError as exc:
            if time.monotonic() >= deadline:
                raise MemoryStoreError(
                    f"the vector store is locked by another process for over {timeout_s:.0f}s",
                    fix="wait for the other bastion process (ingest?) to finish",
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


@dataclass(slots=True, frozen=True)
class Hit:
    """One search result; ``score`` is cosine similarity (1 = same direction)."""

    id: str
    text: str
    score: float
    metadata: dict[str, Any]


class VectorStore:
    """Chroma collections for messages and documents under one directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryStoreError(
                f"cannot open the vector store {self.path}: {exc}",
                fix="check the directory, or set memory.semantic: false",
            ) from exc
        self._lock_path = self.path / ".bastion.lock"
        self._gen_path = self.path / ".bastion.gen"
        self._mutex = threading.RLock()
        self._client: Any = None
        self._gen = -1
        self._cols: dict[str, Any] = {}
        self.reopens = 0
        self.lock_timeout_s = LOCK_TIMEOUT_S

    # -- locking and freshness -------------------------------------------------------
    def _read_gen(self) -> int:
        try:
            return int(self._gen_path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        with self._mutex:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                _flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, self.lock_timeout_s)
                try:
                    gen = self._read_gen()
                    if self._client is None or gen != self._gen:
                        self._open(gen)
                    try:
                        yield
                    finally:
                        if exclusive:  # even a failed write may have changed the data
                            self._gen = gen + 1
                            tmp = self._gen_path.with_suffix(f".{os.getpid()}.tmp")
                            tmp.write_text(str(self._gen))
                            os.replace(tmp, self._gen_path)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def _open(self, gen: int) -> None:
        chromadb: Any = require("chromadb", extra="memory", feature="the vector store")
        from chromadb.config import Settings

        if self._client is not None:
            self.reopens += 1
            with contextlib.suppress(Exception):  # a broken old client must not block a new one
                self._client.close()
            self._client = None
        try:
            client = chromadb.PersistentClient(
                path=str(self.path),
                settings=Settings(anonymized_telemetry=False, allow_reset=False),
            )
            self._cols = {
                name: client.get_or_create_collection(
                    name, configuration={"hnsw": {"space": "cosine"}}
                )
                for name in COLLECTIONS
            }
        except Exception as exc:
            raise MemoryStoreError(
                f"cannot open the vector store {self.path}: {exc}",
                fix="check the directory, or set memory.semantic: false",
            ) from exc
        self._client = client
        self._gen = gen

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MemoryStoreError:
            raise
        except Exception as exc:
            raise MemoryStoreError(f"vector store {what} failed: {exc}") from exc

    # -- operations ------------------------------------------------------------------
    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: Sequence[Sequence[float]],
        texts: Sequence[str],
        metadatas: Sequence[Metadata],
    ) -> None:
        """Add or replace records."""
        if not ids:
            return
        with self._locked(exclusive=True):
            col = self._cols[collection]
            self._call(
                "write", col.upsert, ids=list(ids), embeddings=[list(v) for v in vectors],
                documents=list(texts), metadatas=[dict(m) for m in metadatas],
            )

    def query(
        self,
        collection: str,
        vector: Sequence[float],
        k: int,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Return the ``k`` nearest records (filtered by ``where``), best first."""
        if k <= 0:
            return []
        with self._locked(exclusive=False):
            col = self._cols[collection]
            res = self._call(
                "query", col.query, query_embeddings=[list(vector)], n_results=k, where=where,
                include=["documents", "metadatas", "distances"],
            )
        ids = res["ids"][0]
        docs = (res.get("documents") or [[]])[0] or [""] * len(ids)
        metas = (res.get("metadatas") or [[]])[0] or [{}] * len(ids)
        dists = (res.get("distances") or [[]])[0] or [1.0] * len(ids)
        return [
            Hit(i, d or "", 1.0 - float(dist), dict(m or {}))
            for i, d, m, dist in zip(ids, docs, metas, dists, strict=False)
        ]

    def metadatas(self, collection: str, offset: int, limit: int
                  ) -> tuple[list[str], list[Metadata]]:
        """Return one page of a collection's record ids and metadata (in storage order)."""
        with self._locked(exclusive=False):
            col = self._cols[collection]
            got = self._call("get", col.get, include=["metadatas"], offset=offset, limit=limit)
        return list(got["ids"]), [dict(m or {}) for m in got.get("metadatas") or []]

    def update_metadata(self, collection: str, ids: Sequence[str],
                        metadatas: Sequence[Metadata]) -> None:
        """Replace the metadata of existing records (their vectors stay)."""
        if not ids:
            return
        with self._locked(exclusive=True):
            col = self._cols[collection]
            self._call("write", col.update, ids=list(ids), metadatas=[dict(m) for m in metadatas])

    def delete(
        self, collection: str, *, ids: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
    ) -> None:
        """Delete records by id or metadata filter."""
        if ids is not None and not ids:
            return
        with self._locked(exclusive=True):
            col = self._cols[collection]
            self._call("delete", col.delete, ids=list(ids) if ids else None, where=where)

    def count(self, collection: str, where: dict[str, Any] | None = None) -> int:
        """Return how many records a collection holds (matching ``where``)."""
        with self._locked(exclusive=False):
            col = self._cols[collection]
            if where is None:
                return int(self._call("count", col.count))
            got = self._call("count", col.get, where=where, include=[])
            return len(got["ids"])

    def close(self) -> None:
        """Close the client (the data stays on disk)."""
        with self._mutex:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None
                    self._cols = {}


_OPEN: dict[str, VectorStore] = {}
_OPEN_LOCK = threading.Lock()


def open_vectors(path: Path) -> VectorStore:
    """Return this process's store for ``path`` (one per directory)."""
    key = str(Path(path).resolve())
    with _OPEN_LOCK:
        vs = _OPEN.get(key)
        if vs is None:
            vs = VectorStore(Path(path))
            _OPEN[key] = vs
        return vs

"""Document ingestion: text, Markdown, PDF, HTML and source code -> chunks -> embeddings.

Each file's SHA-256 is kept in the registry; re-ingesting an unchanged file is a no-op and a
changed one replaces its old chunks. Safe to run from several processes at once (SQLite
write locks + the vector store's lock file).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bastion.errors import MemoryStoreError
from bastion.memory._chunk import chunk, extract_text, kind_of
from bastion.memory.index import SemanticIndex
from bastion.memory.store import DocumentInfo, SessionStore
from bastion.security.identity import ADMIN_OWNER, owner_name

MAX_FILE_BYTES = 25 * 1024 * 1024
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox",
             ".mypy_cache", ".pytest_cache", ".ruff_cache", "dist", "build"}


@dataclass(slots=True)
class FileOutcome:
    """What happened to one file."""

    source: str
    status: str  # "added" | "updated" | "unchanged" | "skipped" | "failed"
    chunks: int = 0
    detail: str = ""


@dataclass(slots=True)
class IngestReport:
    """The result of one ingest run."""

    files: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        """Return how many files ended with ``status``."""
        return sum(1 for f in self.files if f.status == status)

    @property
    def chunks(self) -> int:
        """Return the chunks written in this run."""
        return sum(f.chunks for f in self.files if f.status in ("added", "updated"))

    def summary(self) -> str:
        """Return a one-line summary."""
        parts = [f"{self.count(s)} {s}" for s in ("added", "updated", "unchanged", "skipped",
                                                   "failed") if self.count(s)]
        return f"{', '.join(parts) or 'nothing to do'}; {self.chunks} chunks in {self.seconds:.1f}s"

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict."""
        return {
            "files": [{"source": f.source, "status": f.status, "chunks": f.chunks,
                       "detail": f.detail} for f in self.files],
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }


Progress = Callable[[str, int, int], None]  # (current file, done, total)


def expand(paths: Iterable[Path]) -> Iterator[Path]:
    """Yield the files under ``paths`` (directories recursively, hidden/build dirs skipped)."""
    for p in paths:
        p = Path(p).expanduser()
        if not p.exists():
            raise MemoryStoreError(f"no such file or directory: {p}")
        if p.is_file():
            yield p.resolve()
            continue
        for sub in sorted(p.rglob("*")):
            rel = sub.relative_to(p).parts
            if any(part in SKIP_DIRS or part.startswith(".") for part in rel):
                continue
            if sub.is_file() and kind_of(sub.name) is not None:
                yield sub.resolve()


def doc_id_for(source: str) -> str:
    """Return the stable id of a document source."""
    return "d" + hashlib.sha256(source.encode()).hexdigest()[:15]


class Ingestor:
    """Turns files into searchable knowledge."""

    def __init__(
        self, store: SessionStore, index: SemanticIndex, *, chunk_chars: int = 1000,
        chunk_overlap: int = 150,
    ) -> None:
        self.store = store
        self.index = index
        self.chunk_chars = chunk_chars
        self.chunk_overlap = chunk_overlap

    def ingest_bytes(self, source: str, data: bytes, *, kind: str | None = None) -> FileOutcome:
        """Ingest one document given as bytes; ``source`` names it (path or name)."""
        kind = kind or kind_of(source)
        if kind is None:
            return FileOutcome(source, "skipped", detail="unsupported file type")
        if len(data) > MAX_FILE_BYTES:
            return FileOutcome(source, "skipped", detail="larger than 25 MiB")
        digest = hashlib.sha256(data).hexdigest()
        old = self.store.document(source)
        if old is not None and old.sha256 == digest:
            return FileOutcome(source, "unchanged", old.chunks)
        try:
            text = extract_text(data, kind)
        except MemoryStoreError as exc:
            return FileOutcome(source, "failed", detail=exc.message)
        pieces = chunk(text, kind, self.chunk_chars, self.chunk_overlap)
        if not pieces:
            return FileOutcome(source, "skipped", detail="no text")
        owner = owner_name()  # another user's document of the same name is another document
        doc_id = doc_id_for(source if owner == ADMIN_OWNER else f"{owner}\0{source}")
        self.index.add_document_chunks(
            doc_id, source, kind, [(c.text, c.where) for c in pieces], replace=old is not None,
            owner=owner,
        )
        self.store.put_document(
            DocumentInfo(doc_id, source, digest, kind, len(pieces), len(data), time.time())
        )
        return FileOutcome(source, "updated" if old else "added", len(pieces))

    def ingest_paths(self, paths: Iterable[Path], progress: Progress | None = None) -> IngestReport:
        """Ingest files and directories; report per file."""
        started = time.perf_counter()
        files = list(dict.fromkeys(expand(paths)))
        report = IngestReport()
        for n, path in enumerate(files):
            if progress:
                progress(str(path), n, len(files))
            try:
                data = path.read_bytes()
                outcome = self.ingest_bytes(str(path), data)
            except OSError as exc:
                outcome = FileOutcome(str(path), "failed", detail=str(exc))
            report.files.append(outcome)
        if progress:
            progress("", len(files), len(files))
        report.seconds = time.perf_counter() - started
        return report

    def remove(self, source: str) -> DocumentInfo:
        """Forget a document (by path, name or id)."""
        doc = self.store.document(source) or self.store.document(str(Path(source).resolve()))
        if doc is None:
            raise MemoryStoreError(
                f"no ingested document '{source}'", fix="list them with: bastion knowledge list"
            )
        self.index.forget_document(doc.id)
        self.store.remove_document(doc.id)
        return doc

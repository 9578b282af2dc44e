"""Memory integration fixtures: the real shipped embedding model, loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config.model import MemoryConfig
from bastion.memory.embeddings import SentenceEmbedder, get_embedder
from bastion.memory.persistent import PersistentMemory


@pytest.fixture(scope="session")
def embedder() -> SentenceEmbedder:
    return get_embedder()  # cached process-wide: every PersistentMemory below reuses it


@pytest.fixture
def memory(tmp_path: Path, embedder: SentenceEmbedder) -> PersistentMemory:
    mem = PersistentMemory(MemoryConfig(), root=tmp_path / "mem")
    yield mem
    mem.close()


def minimal_pdf(text: str) -> bytes:
    """Return a one-page PDF whose text layer is ``text`` (Helvetica, one line)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)

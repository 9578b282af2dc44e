"""The semantic index filters by owner inside the (real, Chroma) vector query.

A small deterministic embedder stands in for the model (the ranking, not the embedding, is
under test); the live attack with the real model is in tests/security/test_users_keys.py.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest

from bastion.memory.index import OWNERS_MARK, SemanticIndex
from bastion.memory.store import DocumentInfo, SessionStore
from bastion.memory.vectors import DOCUMENTS, VectorStore
from bastion.messages import Message
from bastion.security.identity import acting_as, make_principal

pytest.importorskip("chromadb")


class _Words:
    """Bag-of-words vectors: texts sharing words are close."""

    name = "words"
    dim = 64

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for t in texts:
            v = [0.0] * self.dim
            for w in t.lower().split():
                v[int(hashlib.sha256(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            n = math.sqrt(sum(x * x for x in v)) or 1.0
            out.append([x / n for x in v])
        return out


def _as(user: str):  # type: ignore[no-untyped-def]
    return acting_as(make_principal(user, f"k-{user}", {"user"}, ["chat"]))


def test_records_of_before_owners_are_tagged_and_filtered_before_top_k(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "m.db")
    vectors = VectorStore(tmp_path / "vec")
    index = SemanticIndex(store, vectors, _Words())  # type: ignore[arg-type]
    words = _Words()
    with _as("alice"):  # as an older version wrote them: no owner in the vectors' metadata
        for n in range(8):
            store.put_document(DocumentInfo(f"a{n}", f"a{n}.md", "x", "md", 1, 1, 1.0))
        texts = ["vault code door"] * 8
        vectors.upsert(DOCUMENTS, [f"a{n}-0" for n in range(8)], words.embed(texts), texts,
                       [{"doc_id": f"a{n}", "source": f"a{n}.md", "kind": "md", "chunk": 0,
                         "where": ""} for n in range(8)])
        sm = store.append("alice-s", Message("user", "vault code door please"))
    with _as("bob"):
        store.put_document(DocumentInfo("b0", "b0.md", "x", "md", 1, 1, 1.0))
        index.add_document_chunks("b0", "b0.md", "md", [("garden vault shed", "")])
    index.index_messages([sm])
    with _as("bob"):
        hits = index.search("vault code door", k=2)
    assert [h.source for h in hits] == ["b0.md"]  # not starved by alice's 8 closer ones
    assert (tmp_path / "vec" / OWNERS_MARK).exists()
    owners = {m["doc_id"]: m["owner"] for m in vectors.metadatas(DOCUMENTS, 0, 100)[1]}
    assert owners == {**{f"a{n}": "alice" for n in range(8)}, "b0": "bob"}
    with _as("alice"):
        assert {h.source for h in index.search("vault code door", k=3)} <= {
            "alice-s", *{f"a{n}.md" for n in range(8)}}
    vectors.close()
    store.close()

"""The conversation never fails because the vector store or the embedder does."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bastion.config.model import Config, MemoryConfig
from bastion.memory.embeddings import SentenceEmbedder
from bastion.memory.persistent import PersistentMemory
from bastion.testing import ScriptedModel, say


async def test_broken_vector_store_warns_and_the_turn_still_works(
    tmp_path: Path, embedder: SentenceEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    from bastion.app import build_app

    root = tmp_path / "mem"
    root.mkdir()
    (root / "vectors").write_text("not a directory")  # Chroma cannot open its store here
    mem = PersistentMemory(MemoryConfig(), root=root)
    model = ScriptedModel(say("still answering"))
    app = build_app(Config(), model=model, memory=mem)
    with caplog.at_level(logging.WARNING, logger="bastion.memory"):
        done = await app.agent().ask("the turtle is named Sheldon", session_id="t")
    assert done.answer == "still answering"
    assert any("semantic memory unavailable" in r.getMessage() for r in caplog.records)
    assert mem.problems and "vector store" in mem.problems[-1]
    stored = mem.store.messages("t")
    assert [m.message.content for m in stored] == ["the turtle is named Sheldon",
                                                   "still answering"]
    assert len(mem.store.pending()) == 2  # on disk, waiting for the index

    (root / "vectors").unlink()  # the store is repaired: search catches up
    results = mem.search("what is the turtle called?", k=1)
    assert "Sheldon" in results[0].text
    assert mem.store.pending() == []
    await app.aclose()


async def test_missing_embedding_model_warns_and_the_turn_still_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bastion.app import build_app
    from bastion.errors import MemoryStoreError

    empty = tmp_path / "no-model"
    empty.mkdir()
    mem = PersistentMemory(MemoryConfig(embedding_model=empty), root=tmp_path / "mem")
    app = build_app(Config(), model=ScriptedModel(say("ok")), memory=mem)
    with caplog.at_level(logging.WARNING, logger="bastion.memory"):
        await app.agent().ask("hello", session_id="e")
    assert any("embedding model" in r.getMessage() for r in caplog.records)
    assert len(mem.store.messages("e")) == 2
    with pytest.raises(MemoryStoreError, match="cannot load the embedding model"):
        mem.search("hello")  # an explicit search reports the failure, never swallows it
    await app.aclose()

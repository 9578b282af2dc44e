"""RAG retrieval is a span of the turn (real embedding model, real SQLite + vector index)."""

from __future__ import annotations

from pathlib import Path

from bastion import telemetry
from bastion.config.model import MemoryConfig
from bastion.memory.embeddings import SentenceEmbedder
from bastion.memory.persistent import PersistentMemory
from bastion.messages import Message
from tests.fakes.otlp_receiver import OtlpReceiver, one


async def test_retrieval_is_a_child_span_with_the_snippet_count(
    tmp_path: Path, embedder: SentenceEmbedder
) -> None:
    mem = PersistentMemory(MemoryConfig(min_score=0.2), root=tmp_path / "m")
    await mem.append("a", Message("user", "The lake cabin wifi password is heron42."))
    question = "What is the lake cabin wifi password?"
    with OtlpReceiver() as receiver:
        telemetry.configure(receiver.endpoint)
        try:
            with telemetry.span("turn"):
                ctx = await mem.build_context("b", Message("system", "SYS"),
                                              [Message("user", question)], question)
        finally:
            telemetry.shutdown()
            mem.close()
        spans = receiver.wait_for(lambda s: len(s) >= 2)
    assert "heron42" in ctx[0].content
    turn, retrieve = one(spans, "turn"), one(spans, "memory.retrieve")
    assert retrieve.parent_id == turn.span_id  # made in the worker thread, still in the trace
    assert retrieve.attributes["bastion.memory.snippets"] >= 1
    assert "heron42" not in str(retrieve.attributes)

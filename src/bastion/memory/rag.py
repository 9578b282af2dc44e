"""Retrieval-augmented context: pick the snippets a turn needs and present them with sources.

Order of preference: the same session first (what fell out of the window), then other
sessions (when ``cross_session``) and ingested documents (when ``documents``), by score.
Snippets already in the windowed context are skipped.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from bastion.memory.index import SearchResult, SemanticIndex

SNIPPET_CHARS = 700
HEADER = (
    "Relevant notes retrieved from memory and documents. Use them if they help, and cite the "
    "source in brackets, e.g. [1]:"
)


@dataclass(slots=True, frozen=True)
class RagSettings:
    """How many snippets and from where."""

    k: int = 4
    cross_session: bool = True
    documents: bool = True
    min_score: float = 0.3


def retrieve(
    index: SemanticIndex,
    query: str,
    session_id: str | None,
    settings: RagSettings,
    *,
    skip_texts: Collection[str] = (),
) -> list[SearchResult]:
    """Return up to ``k`` snippets for ``query``: same session first, then the rest by score."""
    if settings.k <= 0 or not query.strip():
        return []
    vec = index.embed_query(query)
    fetch = settings.k * 2 + len(skip_texts) // 4  # extra, since some are skipped
    skip = {t.strip() for t in skip_texts}

    def keep(r: SearchResult) -> bool:
        return r.score >= settings.min_score and r.text.strip() not in skip

    own: list[SearchResult] = []
    if session_id is not None:
        own = [r for r in index.search_messages(vec, fetch, session_id=session_id) if keep(r)]
    rest: list[SearchResult] = []
    if settings.cross_session:
        rest += index.search_messages(vec, fetch, exclude_session=session_id)
    if settings.documents:
        rest += index.search_documents(vec, fetch)
    rest = sorted((r for r in rest if keep(r)), key=lambda r: r.score, reverse=True)
    out: list[SearchResult] = []
    seen: set[str] = set()
    for r in [*own, *rest]:
        key = r.text.strip()
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
        if len(out) >= settings.k:
            break
    return out


def format_snippets(results: list[SearchResult], max_chars: int = SNIPPET_CHARS) -> str:
    """Return the snippets as a numbered, sourced block for the system prompt."""
    if not results:
        return ""
    lines = [HEADER]
    for n, r in enumerate(results, 1):
        text = " ".join(r.text.split())
        if len(text) > max_chars:
            text = text[: max_chars - 3] + "..."
        lines.append(f"[{n}] ({r.label()}) {text}")
    return "\n".join(lines)

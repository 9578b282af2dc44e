"""Redaction of secrets in text and structured data before it is logged, audited or shown.

:class:`Redactor` is the scanner (:mod:`bastion.security.scanner`) with the redact policy,
plus masking of values stored under keys named like secrets (``password``, ``token`` ...).
One redactor is shared by the audit log, the gateway's output stage and the model guard,
so a value registered once (``add_known``) is masked everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from bastion.security.scanner import MASK, SecretScanner

__all__ = ["MASK", "Redactor"]

_SENSITIVE_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|auth|credential|private[_-]?key|cookie)", re.I
)


_CACHE_MAX_CHARS = 512
_CACHE_ENTRIES = 8192


class Redactor:
    """Masks known token formats, sensitive keys and exact values bastion holds."""

    def __init__(
        self, known_values: Iterable[str] = (), *, scanner: SecretScanner | None = None
    ) -> None:
        self.scanner = scanner or SecretScanner()
        for value in known_values:
            self.scanner.add_known(value)
        # Audit fields and tool lines repeat a lot (tool names, decisions, common outputs):
        # short texts are remembered until the held values change.
        self._cache: dict[str, str] = {}
        self._cache_version = -1
        self._keys: dict[Any, bool] = {}

    def add_known(self, value: str) -> None:
        """Also mask this exact value (a secret bastion holds) wherever it appears, encoded too."""
        self.scanner.add_known(value)

    def text(self, text: str) -> str:
        """Return ``text`` with secrets masked."""
        if len(text) > _CACHE_MAX_CHARS:
            return self.scanner.redact(text)
        if self._cache_version != self.scanner.version or len(self._cache) > _CACHE_ENTRIES:
            self._cache = {}
            self._cache_version = self.scanner.version
        out = self._cache.get(text)
        if out is None:
            out = self._cache[text] = self.scanner.redact(text)
        return out

    def _sensitive(self, key: Any) -> bool:
        hit = self._keys.get(key)
        if hit is None:
            hit = isinstance(key, str) and _SENSITIVE_KEY.search(key) is not None
            if len(self._keys) < _CACHE_ENTRIES:
                self._keys[key] = hit
        return hit

    def data(self, value: Any) -> Any:
        """Return a copy of ``value`` with secrets masked (keys named like secrets too)."""
        if isinstance(value, dict):
            return {
                k: (MASK if v and self._sensitive(k) and not isinstance(v, (dict, list, bool))
                    else self.data(v))
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


    def held_text(self, text: str, mask: Callable[[str], str] | None = None) -> str:
        """Return ``text`` exactly, except the secrets bastion holds (``mask(value)`` or MASK).

        For what a human must judge or a forensic record must keep: approval views and audit
        arguments. Nothing is masked for merely looking like a secret.
        """
        spans = self.scanner.held_spans(text)
        if not spans:
            return text
        parts: list[str] = []
        pos = 0
        for start, end, value in spans:
            parts.append(text[pos:start])
            parts.append(mask(value) if mask is not None else MASK)
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    def held_data(self, value: Any, mask: Callable[[str], str] | None = None) -> Any:
        """Return a copy of ``value`` with only held secrets masked (see :meth:`held_text`)."""
        if self.scanner.held_count == 0:
            return value
        if isinstance(value, dict):
            return {k: self.held_data(v, mask) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.held_data(v, mask) for v in value]
        if isinstance(value, str):
            return self.held_text(value, mask)
        return value


_installed: list[Redactor] = []


def install_log_redaction(redactor: Redactor) -> None:
    """Redact every log record of this process (any logger, any handler) with ``redactor``.

    Wraps the log-record factory once, so a secret never reaches a log file or the console
    through ``logging``, whatever module logs it. Later calls switch to the newer redactor.
    """
    import logging

    if _installed:
        _installed[0] = redactor
        return
    _installed.append(redactor)
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            text = record.getMessage()
        except Exception:  # a broken format string: leave it to logging to report
            return record
        record.msg, record.args = _installed[0].text(text), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _installed[0].text(logging.Formatter().formatException(
                record.exc_info))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)

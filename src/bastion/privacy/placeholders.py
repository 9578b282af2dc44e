"""Stable placeholders for PII (``<PERSON_1>``) and their restoration, streamed chunks too.

One :class:`Pseudonymizer` serves one model request: the same value gets the same
placeholder everywhere in the request (so the remote model can refer back to it), different
values of a class get increasing numbers in order of first appearance (so the numbering is
the same on every step of a conversation while its messages stay in the window), and a
placeholder-looking string the user typed is never reused.

:class:`StreamRestorer` turns placeholders in streamed text back into the values, holding
back only a tail that may be the start of a placeholder split across chunks.

Models do not always copy ``<PERSON_1>`` verbatim: small ones drop the angle brackets, swap
them for ``[...]``, and bastion's own constrained decoding copies words without punctuation.
So the bare token (``PERSON_1``, as a whole word) and other brackets are restored too;
placeholder-like words already in the request are never handed out, so a bare token that is
restored can only have come from a placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bastion.privacy.detect import Entity

_TOKEN = re.compile(r"(?<![A-Za-z0-9_])[A-Z][A-Z0-9_]*_\d+(?![A-Za-z0-9_])")
_OPEN = "<[{"


class Pseudonymizer:
    """Maps PII values to placeholders and back for one request."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        """Start empty; ``reserved`` texts' placeholder-like strings are never handed out."""
        self.forward: dict[tuple[str, str], str] = {}
        self.reverse: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._taken: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for text in reserved:
            self._taken.update(_TOKEN.findall(text))

    def placeholder(self, entity_type: str, value: str) -> str:
        """Return the placeholder for ``value`` of ``entity_type`` (the same one every time)."""
        key = (entity_type, value)
        ph = self.forward.get(key)
        if ph is None:
            label = re.sub(r"[^A-Z0-9_]", "_", entity_type.upper()) or "PII"
            while True:
                n = self._counts[label] = self._counts.get(label, 0) + 1
                token = f"{label}_{n}"
                if token not in self._taken:
                    break
            ph = f"<{token}>"
            self.forward[key] = ph
            self.reverse[token] = value
            self._pattern = None
        return ph

    def redact(self, text: str, entities: Iterable[Entity]) -> str:
        """Return ``text`` with each of ``entities`` (sorted, non-overlapping) replaced."""
        parts: list[str] = []
        pos = 0
        for e in entities:
            parts.append(text[pos : e.start])
            parts.append(self.placeholder(e.entity_type, text[e.start : e.end]))
            pos = e.end
        parts.append(text[pos:])
        return "".join(parts)

    @property
    def tokens(self) -> list[str]:
        """The bare placeholder tokens handed out (``PERSON_1`` ...)."""
        return list(self.reverse)

    def restore(self, text: str) -> str:
        """Return ``text`` with every known placeholder (bracketed or bare) replaced."""
        if not self.reverse or "_" not in text:
            return text
        if self._pattern is None:
            alts = "|".join(re.escape(t) for t in sorted(self.reverse, key=len, reverse=True))
            self._pattern = re.compile(
                rf"(?<![A-Za-z0-9_])[<\[{{]?({alts})[>\]}}]?(?![A-Za-z0-9_])"
            )
        return self._pattern.sub(lambda m: self.reverse[m.group(1)], text)

    def restore_data(self, value: Any) -> Any:
        """Return a copy of JSON-like ``value`` with placeholders restored in keys and strings."""
        if isinstance(value, str):
            return self.restore(value)
        if isinstance(value, dict):
            return {self.restore(k) if isinstance(k, str) else k: self.restore_data(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.restore_data(v) for v in value]
        return value


class StreamRestorer:
    """Restores placeholders in streamed text, whatever the chunk boundaries."""

    def __init__(self, pseudonyms: Pseudonymizer) -> None:
        self.p = pseudonyms
        self._keys = pseudonyms.tokens
        self._max = max((len(k) for k in self._keys), default=0) + 2
        self._buf = ""
        self._prev = ""

    def _holdable(self, tail: str) -> bool:
        core = tail[1:] if tail[0] in _OPEN else tail
        if not core:
            return True  # a lone opening bracket: the next chunk decides
        # a prefix of a token, or a whole token whose next character (a closing bracket,
        # a word character making it another word) has not arrived yet
        return any(k.startswith(core) for k in self._keys)

    def _emit(self, text: str) -> str:
        # the character shown last decides whether ``text`` starts inside a word
        prev, self._prev = self._prev, (text[-1:] or self._prev)
        out = self.p.restore(prev + text)
        return out[len(prev):] if out.startswith(prev) else self.p.restore(text)

    def feed(self, text: str) -> str:
        """Take the next chunk; return what can be shown now (restored)."""
        if not self._keys:
            return text
        buf = self._buf + text
        cut = len(buf)
        for i in range(max(0, len(buf) - self._max), len(buf)):
            before = buf[i - 1] if i else self._prev
            if before.isalnum() or before == "_":
                continue  # not at a word start
            if self._holdable(buf[i:]):
                cut = i
                break
        self._buf = buf[cut:]
        return self._emit(buf[:cut])

    def flush(self) -> str:
        """Return whatever is still held (the stream ended)."""
        out, self._buf = self._buf, ""
        return self._emit(out)

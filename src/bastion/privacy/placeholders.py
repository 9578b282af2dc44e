"""Stable placeholders for PII (``<PERSON_1>``) and their restoration, streamed chunks too.

One :class:`Pseudonymizer` serves one model request: the same value gets the same
placeholder everywhere in the request (so the remote model can refer back to it), different
values of a class get increasing numbers in order of first appearance (so the numbering is
the same on every step of a conversation while its messages stay in the window), and a
placeholder-looking string the user typed is never reused.

:class:`StreamRestorer` turns placeholders in streamed text back into the values, holding
back only a tail that may be the start of a placeholder split across chunks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bastion.privacy.detect import Entity

_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


class Pseudonymizer:
    """Maps PII values to placeholders and back for one request."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        """Start empty; ``reserved`` texts' placeholder-like strings are never handed out."""
        self.forward: dict[tuple[str, str], str] = {}
        self.reverse: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._taken: set[str] = set()
        for text in reserved:
            self._taken.update(_PLACEHOLDER.findall(text))

    def placeholder(self, entity_type: str, value: str) -> str:
        """Return the placeholder for ``value`` of ``entity_type`` (the same one every time)."""
        key = (entity_type, value)
        ph = self.forward.get(key)
        if ph is None:
            label = re.sub(r"[^A-Z0-9_]", "_", entity_type.upper()) or "PII"
            while True:
                n = self._counts[label] = self._counts.get(label, 0) + 1
                ph = f"<{label}_{n}>"
                if ph not in self._taken:
                    break
            self.forward[key] = ph
            self.reverse[ph] = value
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

    def restore(self, text: str) -> str:
        """Return ``text`` with every known placeholder replaced by its value."""
        if not self.reverse or "<" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: self.reverse.get(m.group(), m.group()), text)

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
        self._keys = list(pseudonyms.reverse)
        self._max = max((len(k) for k in self._keys), default=0)
        self._buf = ""

    def _partial(self, tail: str) -> bool:
        return len(tail) < self._max and any(k.startswith(tail) for k in self._keys)

    def feed(self, text: str) -> str:
        """Take the next chunk; return what can be shown now (restored)."""
        if not self._keys:
            return text
        buf = self._buf + text
        cut = len(buf)
        i = buf.rfind("<")
        if i != -1 and self._partial(buf[i:]):
            cut = i
        self._buf = buf[cut:]
        return self.p.restore(buf[:cut])

    def flush(self) -> str:
        """Return whatever is still held (the stream ended)."""
        out, self._buf = self._buf, ""
        return self.p.restore(out)

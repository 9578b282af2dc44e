"""Text for speaking: strip markup and cut a token stream into sentences as they complete.

Speaking starts with the first finished sentence while the model is still writing the rest,
so the splitter works on a growing buffer and only releases text it is sure of.
"""

from __future__ import annotations

import re

_ABBREV = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd",
    "no", "fig", "approx", "dept", "est", "mt", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
    "sep", "sept", "oct", "nov", "dec",
}
_END = re.compile(r"([.!?…]+[\"')\]]*(?=\s)|\n)\s*")
_MD = re.compile(
    r"(```.*?```|`([^`]*)`|\*\*|__|(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w)|^#+\s*|^\s*[-*+]\s+"
    r"|\[([^\]]*)\]\([^)]*\))",
    re.S | re.M,
)
_URL = re.compile(r"https?://\S+")
_SPACE = re.compile(r"\s+")


def speakable(text: str) -> str:
    """Return ``text`` without markdown, code blocks or URLs, whitespace collapsed."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0).startswith("```"):
            return " "
        return m.group(2) or m.group(3) or ""

    text = _MD.sub(repl, text)
    text = _URL.sub("a link", text)
    return _SPACE.sub(" ", text).strip()


def _is_abbreviation(text: str, end: int) -> bool:
    word = text[:end].rstrip(".").rsplit(None, 1)[-1].lower() if text[:end].strip() else ""
    word = word.lstrip("(\"'")
    return word in _ABBREV or (len(word) == 1 and word.isalpha())


class SentenceSplitter:
    """Feed text pieces; get back the sentences that are complete so far."""

    def __init__(self, min_chars: int = 12) -> None:
        self._buf = ""
        self.min_chars = min_chars

    def feed(self, piece: str) -> list[str]:
        """Add ``piece`` and return the sentences it completed (possibly none)."""
        self._buf += piece
        out: list[str] = []
        start = 0
        for m in _END.finditer(self._buf):
            end = m.end(1)
            if self._buf[end - 1] == "." and _is_abbreviation(self._buf, end):
                continue
            candidate = self._buf[start:end].strip()
            if len(candidate) < self.min_chars:
                continue  # "Yes." joins the next sentence: tiny clips sound choppy
            out.append(candidate)
            start = m.end()
        self._buf = self._buf[start:]
        return [s for s in (speakable(x) for x in out) if s]

    def flush(self) -> list[str]:
        """Return whatever is left as a final sentence."""
        rest, self._buf = speakable(self._buf), ""
        return [rest] if rest else []


def split_sentences(text: str, min_chars: int = 1) -> list[str]:
    """Split a whole text into sentences."""
    splitter = SentenceSplitter(min_chars)
    return splitter.feed(text) + splitter.flush()

"""Secret scanner: well-known token formats, high-entropy strings, the exact values bastion holds.

The scanner runs on every tool output (gateway stage), every model-bound message (the model
guard) and every audit record (through :class:`~bastion.security.redact.Redactor`). Held values
are matched raw and in the encodings a tool might print them in: base64 (standard and URL-safe,
at any alignment inside a longer base64 stream), hex (both cases) and URL-encoding.

Policy ``redact`` masks what it finds; ``block`` withholds the whole text.
"""

from __future__ import annotations

import base64
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, quote_plus

from bastion.security._scanner_rules import (
    ASSIGNED_VALUE,
    ASSIGNMENT_KEYWORDS,
    IDENT,
    RULES,
    SENSITIVE_NAME,
    Rule,
)

MASK = "[REDACTED]"
Policy = Literal["redact", "block"]
MIN_HELD_LEN = 6
# No leading look-behind (it would slow the scan 3x): finditer resumes after each run anyway.
_ENTROPY_CANDIDATE = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}(?![A-Za-z0-9+/_=-])")
_WORD = re.compile(r"[A-Za-z0-9_]")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_=.-]{16}")
_SHORT_KEYWORDS = ("://", "-----BEGIN")  # rules that can match without a long run
# Public text that only looks secret: a reference to a secret (secret://backend/path#key, whose
# parts are names, not random) and an SPKI pin (sha256/ + the base64 of a public key's hash).
# Inside them, the guesses (entropy, ``secret:`` read as an assignment) are dropped; held
# values and the named token formats never are.
_REFERENCE = re.compile(r"secret://(?:env|sops|vault|openbao)/[A-Za-z0-9_./-]{1,200}"
                        r"(?:#[A-Za-z0-9_.-]{1,64})?")
_PIN = re.compile(r"(?<![A-Za-z0-9+/])sha256/[A-Za-z0-9+/]{43}=")
_GUESSES = ("high_entropy", "password_assignment")


@dataclass(slots=True, frozen=True)
class Finding:
    """One secret found in a text: where, and which rule found it (never the value itself)."""

    rule: str
    start: int
    end: int


@dataclass(slots=True, frozen=True)
class ScanResult:
    """What applying the policy to a text gave."""

    text: str
    findings: tuple[Finding, ...]
    blocked: bool = False

    @property
    def rules(self) -> list[str]:
        """Return the distinct rule names that matched, in order of first match."""
        return list(dict.fromkeys(f.rule for f in self.findings))


def shannon_entropy(text: str) -> float:
    """Return the Shannon entropy of ``text`` in bits per character."""
    if not text:
        return 0.0
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_random(token: str) -> bool:
    """High entropy and mixed character classes: a likely key, not a word or a path."""
    if _HEX.match(token):
        return False  # digests and commit ids; hex keys are caught by their context (key=...)
    classes = sum((any(c.islower() for c in token), any(c.isupper() for c in token),
                   any(c.isdigit() for c in token)))
    if classes < 3:
        return False
    return shannon_entropy(token) >= 4.2


def encodings(value: str) -> set[str]:
    """Return the forms a held value is matched in: raw, base64 (3 alignments), hex, URL-encoded."""
    raw = value.encode()
    out = {value, raw.hex(), raw.hex().upper(), quote(value, safe=""), quote_plus(value)}
    for pad in range(3):
        # The value's bytes at offset ``pad`` of a longer base64 stream: keep only the
        # characters that depend on the value alone (drop the edges that mix with neighbours).
        enc = base64.b64encode(b"\0" * pad + raw).decode().rstrip("=")
        lead = {0: 0, 1: 2, 2: 3}[pad]
        tail = (len(raw) + pad) % 3
        core = enc[lead: len(enc) - (1 if tail else 0)]
        if len(core) >= MIN_HELD_LEN:
            out.add(core)
            out.add(core.replace("+", "-").replace("/", "_"))
    out.add(base64.b64encode(raw).decode())
    out.add(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    return {o for o in out if len(o) >= MIN_HELD_LEN}


class SecretScanner:
    """Finds secrets in text; thread-safe; held values can be added at any time."""

    def __init__(
        self,
        known_values: Iterable[str] = (),
        *,
        policy: Policy = "redact",
        entropy: bool = True,
        rules: Iterable[Rule] = RULES,
    ) -> None:
        self.policy: Policy = policy
        self.entropy = entropy
        self.rules = list(rules)
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._owner: dict[str, str] = {}  # matchable form -> the held value it encodes
        self.version = 0  # bumped when held values change (caches of results key on it)
        self._held_re: re.Pattern[str] | None = None
        # One pass over the text finds which keywords occur; only their rules then run.
        self._by_kw: dict[str, list[Rule]] = {}
        self._by_kw_nocase: dict[str, list[Rule]] = {}
        for rule in self.rules:
            table = self._by_kw_nocase if rule.nocase else self._by_kw
            for kw in rule.keywords:
                table.setdefault(kw.lower() if rule.nocase else kw, []).append(rule)
        for kw in ASSIGNMENT_KEYWORDS:
            self._by_kw_nocase.setdefault(kw, [])
        self._kw = list(self._by_kw.items())
        self._kw_nocase = list(self._by_kw_nocase.items())
        for value in known_values:
            self.add_known(value)

    # ---- held values -------------------------------------------------------------------------
    def add_known(self, value: str) -> None:
        """Also match this exact value (and its encodings) wherever it appears."""
        if not value or len(value) < MIN_HELD_LEN:
            return
        forms = encodings(value)
        with self._lock:
            if forms <= self._held:
                return
            self._held |= forms
            for form in forms:
                self._owner.setdefault(form, value)
            self.version += 1
            alts = sorted(self._held, key=len, reverse=True)
            self._held_re = re.compile("|".join(re.escape(a) for a in alts))

    @property
    def held_count(self) -> int:
        """Return how many matchable forms of held values there are."""
        return len(self._held)

    def held_spans(self, text: str) -> list[tuple[int, int, str]]:
        """Return ``(start, end, held value)`` for each held value (in any encoding) in ``text``.

        Only the secrets bastion holds, never format or entropy guesses: this is what is
        masked in what approvers and the audit log see, so an attacker's payload that merely
        looks random stays visible.
        """
        held = self._held_re
        if held is None or len(text) < MIN_HELD_LEN:
            return []
        return [(m.start(), m.end(), self._owner.get(m.group(), m.group()))
                for m in held.finditer(text)]

    # ---- scanning ----------------------------------------------------------------------------
    def scan(self, text: str) -> list[Finding]:
        """Return the secrets in ``text`` (non-overlapping, in order)."""
        if not text or len(text) < MIN_HELD_LEN:
            return []
        found: list[Finding] = []
        held = self._held_re
        if held is not None:
            found.extend(Finding("held_value", m.start(), m.end()) for m in held.finditer(text))
        # Every format token has a run of >= 16 token characters; most texts have none, and
        # then only the URL-password rule (short passwords) can match.
        long_run = _LONG_RUN.search(text) is not None
        present = [kw for kw, _ in self._kw if kw in text] if long_run else [
            kw for kw in _SHORT_KEYWORDS if kw in text and kw in self._by_kw]
        if present:
            ran: set[str] = set()
            for kw in present:
                for rule in self._by_kw[kw]:
                    if rule.name in ran:
                        continue
                    ran.add(rule.name)
                    for m in rule.pattern.finditer(text):
                        st = m.start()
                        if rule.boundary and st and _WORD.match(text, st - 1):
                            continue
                        s, e = m.span(rule.group)
                        found.append(Finding(rule.name, s, e))
        lower = text.lower()
        present = [kw for kw, _ in self._kw_nocase if kw in lower]
        if present:
            for kw in present:
                for rule in self._by_kw_nocase[kw]:
                    for pos in _word_starts(lower, (kw,)):
                        hit = rule.pattern.match(text, pos)
                        if hit:
                            s, e = hit.span(rule.group)
                            found.append(Finding(rule.name, s, e))
            if not set(present).isdisjoint(ASSIGNMENT_KEYWORDS):
                found.extend(_assignments(text, lower))
        if self.entropy and long_run:
            for m in _ENTROPY_CANDIDATE.finditer(text):
                if _looks_random(m.group()):
                    found.append(Finding("high_entropy", m.start(), m.end()))
        if found and ("secret://" in text or "sha256/" in text):
            found = _drop_public(text, found)
        return _merge(found)

    def redact(self, text: str) -> str:
        """Return ``text`` with every finding masked."""
        return self.apply(text, "redact").text

    def apply(self, text: str, policy: Policy | None = None) -> ScanResult:
        """Scan ``text`` and apply ``policy`` (default: the scanner's)."""
        findings = self.scan(text)
        if not findings:
            return ScanResult(text, ())
        if (policy or self.policy) == "block":
            rules = ", ".join(dict.fromkeys(f.rule for f in findings))
            return ScanResult(f"[WITHHELD: output contained a secret ({rules})]",
                              tuple(findings), blocked=True)
        parts: list[str] = []
        pos = 0
        for f in findings:
            parts.append(text[pos:f.start])
            parts.append(MASK)
            pos = f.end
        parts.append(text[pos:])
        return ScanResult("".join(parts), tuple(findings))


def _public_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _PIN.finditer(text)]
    for m in _REFERENCE.finditer(text):
        names = re.split(r"[/#.]", m.group()[len("secret://"):])
        if not any(len(n) >= 16 and _looks_random(n) for n in names):  # names, not a key
            spans.append(m.span())
    return spans


def _drop_public(text: str, found: list[Finding]) -> list[Finding]:
    """Drop guessed findings that lie inside a secret reference or a key pin."""
    spans = _public_spans(text)
    if not spans:
        return found
    return [f for f in found if f.rule not in _GUESSES
            or not any(s <= f.start and f.end <= e for s, e in spans)]


def _word_starts(lower: str, keywords: tuple[str, ...]) -> list[int]:
    """Positions where a keyword occurs at the start of a word."""
    out: list[int] = []
    for kw in keywords:
        pos = lower.find(kw)
        while pos != -1:
            if pos == 0 or not lower[pos - 1].isalnum():
                out.append(pos)
            pos = lower.find(kw, pos + 1)
    return out


def _assignments(text: str, lower: str) -> list[Finding]:
    """Values assigned to identifiers named like secrets (``password=...``)."""
    out: list[Finding] = []
    seen: set[int] = set()
    for kw in ASSIGNMENT_KEYWORDS:
        pos = lower.find(kw)
        while pos != -1:
            end = IDENT.match(lower, pos).end()  # type: ignore[union-attr]
            start = pos
            while start > 0 and (lower[start - 1].isalnum() or lower[start - 1] in "_-"):
                start -= 1
            if start not in seen and SENSITIVE_NAME.fullmatch(lower, start, end):
                seen.add(start)
                m = ASSIGNED_VALUE.match(text, end)
                if m:
                    s, e = m.span("value")
                    out.append(Finding("password_assignment", s, e))
            pos = lower.find(kw, end)
    return out


def _merge(found: list[Finding]) -> list[Finding]:
    """Sort findings and merge overlaps, keeping the first rule name of each merged span."""
    if len(found) <= 1:
        return found
    found.sort(key=lambda f: (f.start, -f.end))
    out = [found[0]]
    for f in found[1:]:
        last = out[-1]
        if f.start < last.end:
            if f.end > last.end:
                out[-1] = Finding(last.rule, last.start, f.end)
        else:
            out.append(f)
    return out

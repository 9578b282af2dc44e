"""The page as the model sees it: Playwright's accessibility snapshot with element refs.

``aria_snapshot(mode="ai")`` names every element ``[ref=eN]`` (stable for an element while it
lives); ``aria-ref=eN`` selects it again. For interactive elements we also read a few DOM facts
(tag, type, autocomplete, name, label, form method, href, download) that the risk rules and the
password guard need, and mask the values of secret-looking fields in the text.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

_REF_LINE = re.compile(r'^(\s*)- (\w+)(?: "((?:[^"\\]|\\.)*)")?(.*?)\[ref=([A-Za-z0-9]+)\](.*)$')
INTERACTIVE = {"button", "link", "textbox", "searchbox", "combobox", "checkbox", "radio",
               "menuitem", "menuitemcheckbox", "menuitemradio", "option", "switch", "tab",
               "spinbutton", "slider", "listbox", "treeitem"}
FIELDS = {"textbox", "searchbox", "combobox", "spinbutton"}
_SECRET_WORDS = re.compile(r"(?i)pass(word|wd|phrase|code)?|secret|token|otp|one.?time|2fa|mfa|"
                           r"\bpin\b|cvv|cvc|csc|security.?code|card|\bcc.?(num|number)")
_SECRET_AUTOCOMPLETE = {"current-password", "new-password", "one-time-code", "cc-number",
                        "cc-csc", "cc-exp", "cc-exp-month", "cc-exp-year"}

FACTS_JS = """el => {
  const labels = el.labels ? Array.from(el.labels).map(l => l.innerText) : [];
  const form = el.form || (el.closest ? el.closest('form') : null);
  const attr = n => el.getAttribute ? (el.getAttribute(n) || '') : '';
  const type = (attr('type') || el.type || '').toLowerCase();
  const tag = el.tagName.toLowerCase();
  return {
    tag, type, name: attr('name'), id: el.id || '', autocomplete: attr('autocomplete'),
    label: labels.join(' ').trim().slice(0, 120), aria_label: attr('aria-label'),
    placeholder: attr('placeholder'), inputmode: attr('inputmode'),
    text: (el.innerText || el.value || '').trim().slice(0, 120),
    href: el.href || '', download: el.hasAttribute && el.hasAttribute('download'),
    in_form: !!form, form_method: form ? (form.getAttribute('method') || 'get').toLowerCase() : '',
    form_action: form ? (form.action || '') : '',
    submits: !!form && ((tag === 'button' && (type === '' || type === 'submit')) ||
                        (tag === 'input' && (type === 'submit' || type === 'image'))),
  };
}"""


@dataclass(slots=True)
class Element:
    """What bastion knows about one element of the snapshot."""

    ref: str
    role: str
    name: str
    facts: dict[str, Any]

    @property
    def label(self) -> str:
        """Every human-visible name of the element, joined (for the risk rules)."""
        f = self.facts
        parts = [self.name, f.get("text", ""), f.get("label", ""), f.get("aria_label", ""),
                 f.get("placeholder", ""), f.get("type", "") if f.get("tag") == "input" else ""]
        return " ".join(p for p in parts if p).strip()

    def secret_reason(self) -> str | None:
        """Why typing into this element is refused (a password/secret field), or None."""
        f = self.facts
        if f.get("type") == "password":
            return "it is a password field (type=password)"
        auto = str(f.get("autocomplete", "")).lower().split()
        hit = next((a for a in auto if a in _SECRET_AUTOCOMPLETE), None)
        if hit:
            return f"it is a secret field (autocomplete={hit})"
        for key in ("name", "id", "label", "aria_label", "placeholder"):
            value = str(f.get(key, ""))
            if value and _SECRET_WORDS.search(value):
                return f"its {key.replace('_', '-')} {value[:40]!r} looks like a secret field"
        if _SECRET_WORDS.search(self.name or ""):
            return f"its label {self.name[:40]!r} looks like a secret field"
        return None


def parse(snapshot: str) -> list[tuple[str, str, str]]:
    """Return (ref, role, name) for each line of ``snapshot`` that carries a ref."""
    out = []
    for line in snapshot.splitlines():
        m = _REF_LINE.match(line)
        if m:
            out.append((m.group(5), m.group(2), (m.group(3) or "").replace('\\"', '"')))
    return out


async def element_facts(page: Any, ref: str, timeout_ms: float) -> dict[str, Any] | None:
    """Return the DOM facts of ``aria-ref=ref`` on ``page`` (None when it is gone)."""
    try:
        facts = await page.locator(f"aria-ref={ref}").evaluate(FACTS_JS, timeout=timeout_ms)
    except Exception:  # stale ref, detached element, navigation in between
        return None
    return dict(facts) if isinstance(facts, dict) else None


async def take(page: Any, *, timeout_ms: float) -> tuple[str, dict[str, Element]]:
    """Return the masked snapshot text and its interactive elements by ref.

    DOM facts are read here only for fields (their values may need masking); the target of a
    click is inspected when the click is asked for (``BrowserManager.inspect``).
    """
    text = await page.aria_snapshot(mode="ai", timeout=timeout_ms)
    found = [(r, role, name) for r, role, name in parse(text) if role in INTERACTIVE]
    fields = [r for r, role, _ in found if role in FIELDS]
    facts = await asyncio.gather(*(element_facts(page, r, timeout_ms) for r in fields))
    known = dict(zip(fields, facts, strict=True))
    elements = {r: Element(r, role, name, known.get(r) or {}) for r, role, name in found}
    return mask(text, elements), elements


def mask(text: str, elements: dict[str, Element]) -> str:
    """Replace the shown value of every secret-looking field with a mask."""
    secret = {r for r, e in elements.items() if e.secret_reason() is not None}
    if not secret:
        return text
    lines = []
    for line in text.splitlines():
        m = _REF_LINE.match(line)
        if m and m.group(5) in secret and m.group(6).startswith(":") and m.group(6).strip(": "):
            line = line[: m.start(6)] + ": [hidden by bastion]"
        lines.append(line)
    return "\n".join(lines)

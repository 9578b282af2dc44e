"""The page as the model sees it: Playwright's accessibility snapshot with element refs.

``aria_snapshot(mode="ai")`` names every element ``[ref=eN]`` (stable for an element while it
lives); ``aria-ref=eN`` selects it again. For interactive elements we also read a few DOM facts
(tag, type, autocomplete, name, label, form method, href, download) that the risk rules and the
password guard need, and mask the values of secret-looking fields in the text.
"""

from __future__ import annotations

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


SECRET_VALUES_JS = """(words) => {
  const re = new RegExp(words, 'i');
  const auto = /current-password|new-password|one-time-code|cc-number|cc-csc|cc-exp/i;
  const out = [];
  for (const el of document.querySelectorAll('input, textarea')) {
    const v = el.value || '';
    if (!v) continue;
    const labels = el.labels ? Array.from(el.labels).map(l => l.innerText).join(' ') : '';
    const hay = [el.name, el.id, el.placeholder, el.getAttribute('aria-label'), labels]
      .filter(Boolean).join(' ');
    if (el.type === 'password' || auto.test(el.autocomplete || '') || re.test(hay)) out.push(v);
  }
  return {title: document.title, secrets: out};
}"""


async def take(page: Any, *, timeout_ms: float) -> tuple[str, str, dict[str, Element]]:
    """Return the page title, the masked snapshot text and its interactive elements by ref.

    Two round trips: the snapshot, and the title plus the values of secret-looking fields.
    The DOM facts of the element a click or type targets are read when that action is asked
    for (``BrowserManager.inspect``), so the risk rules see the element as it is then.
    """
    text = await page.aria_snapshot(mode="ai", timeout=timeout_ms)
    title, secrets = "", None
    try:
        found = await page.evaluate(SECRET_VALUES_JS, _SECRET_WORDS.pattern.removeprefix("(?i)"))
        title, secrets = str(found["title"]), [str(v) for v in found["secrets"]]
    except Exception:  # a navigation in between: mask every field value instead
        pass
    elements = {r: Element(r, role, name, {}) for r, role, name in parse(text)
                if role in INTERACTIVE}
    return title, mask(text, elements, secrets), elements


def mask(text: str, elements: dict[str, Element], secret_values: list[str] | None = None
         ) -> str:
    """Replace the shown value of every secret-looking field with a mask.

    A field is secret when its facts or label say so, or when the value shown is one the
    page holds in a secret-looking input (``secret_values``; None = mask every field value).
    """
    secret = {r for r, e in elements.items() if e.secret_reason() is not None}
    values = {v.strip() for v in secret_values or () if v.strip()}
    lines = []
    for line in text.splitlines():
        m = _REF_LINE.match(line)
        if m and m.group(6).startswith(":") and m.group(6).strip(": ") \
                and m.group(2) in FIELDS | {"textbox"}:
            shown = m.group(6)[1:].strip().strip('"')
            if m.group(5) in secret or secret_values is None or shown in values:
                line = line[: m.start(6)] + ": [hidden by bastion]"
        lines.append(line)
    return "\n".join(lines)

"""HITL risk rules for browser actions, and the password-field guard stage.

The rules are ordinary :class:`~bastion.security.hitl.risk.RiskRule` entries whose conditions
look at what the session's last snapshot said about the element a call targets (its role,
label, form, link) -- the model only passes a ref like ``e12``. The risk stage raises the
call to the highest matching level; at or above the approval threshold (HIGH by default) a
human is asked through the approval manager, and a denial means the action never happens.

| # | rule (browser-...) | tool | level | when |
|---|------|------|-------|------|
| 1 | new-domain | navigate | MEDIUM | a host this session has not opened yet |
| 2 | credentials-in-url | navigate | HIGH | user:pass@, token/password/key query params |
| 3 | download-url | navigate | HIGH | URL of an executable, package, archive, image (or |
|   |              |          |      | one whose server named its download so, see _network) |
| 4 | click-destructive | click | CRITICAL | delete, remove, destroy, close account, revoke |
| 5 | click-payment | click | CRITICAL | pay, buy, purchase, checkout, order, transfer |
| 6 | click-send | click | HIGH | send, post, publish, share, reply, invite, upload |
| 7 | click-confirm | click | HIGH | confirm, approve, accept, authorize, allow, agree |
| 8 | click-account-security | click | HIGH | password, 2FA, API key, token, recovery |
| 9 | click-form-submit | click | MEDIUM | a button that submits a form (GET) |
| 10 | click-post-form | click | HIGH | a button that submits a POST form |
| 11 | click-download | click | HIGH | a ``download`` link or a link to such a file (ditto) |
| 12 | click-external-link | click | MEDIUM | a link to another host than the page's |
| 13 | type-payment-field | type | CRITICAL | IBAN, account/routing no., amount, cc-* |
| 14 | type-personal-data | type | HIGH | SSN, passport, tax id, date of birth |
| 15 | type-secret-value | type | CRITICAL | a secret bastion holds, or key/token-like |
| 16 | type-submit | type | MEDIUM | ``submit=true`` (Enter submits the form) |

Separately, :class:`BrowserGuardStage` refuses outright (no human asked) typing into a
password or secret field (type=password, autocomplete=current-password/new-password/
one-time-code/cc-*, name/label/placeholder matching password, secret, token, otp, pin, cvv,
card ...); the manager checks the live element again when it types.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bastion.security.gateway import CallRequest, Next, ToolResult, denied
from bastion.security.hitl.risk import ConditionFn, RiskRule
from bastion.tools.base import Risk

NAVIGATE, CLICK, TYPE = "browser_navigate", "browser_click", "browser_type"

_DESTRUCTIVE = re.compile(r"(?i)\b(delete|remove|destroy|erase|wipe|purge|terminate|deactivate|"
                          r"close (my |the )?account|revoke|unsubscribe|cancel (my )?"
                          r"(subscription|account|plan|order)|reset|discard|drop)\b")
_PAYMENT = re.compile(r"(?i)\b(pay|pay now|buy|buy now|purchase|checkout|check out|place order|"
                      r"order now|complete (order|purchase)|subscribe|donate|transfer|"
                      r"send money|withdraw|add to cart|upgrade|top.?up)\b")
_SEND = re.compile(r"(?i)\b(send|post|publish|share|reply|tweet|comment|invite|upload|"
                   r"broadcast)\b")
_CONFIRM = re.compile(r"(?i)\b(confirm|approve|accept|authori[sz]e|allow|grant|agree|"
                      r"sign(?! ?(in|up|out|on)\b)|consent)\b")
_SECURITY = re.compile(r"(?i)(password|2fa|two.?factor|mfa|api.?key|access.?token|"
                       r"recovery|security settings|permissions|ssh key|"
                       r"generate (a )?(new )?(key|token))")
_DOWNLOAD_EXT = re.compile(r"(?i)\.(exe|msi|dmg|pkg|deb|rpm|apk|appimage|sh|bat|cmd|ps1|jar|"
                           r"scr|iso|img|zip|7z|rar|tar|gz|tgz|bz2|xz)(\?|#|$)")
_URL_SECRET = re.compile(r"(?i)^(pass(word)?|pwd|token|access_token|api_?key|key|secret|auth|"
                         r"session|sid|signature|sig)$")
_PAYMENT_FIELD = re.compile(r"(?i)iban|swift|\bbic\b|routing|account.?(number|no)|sort.?code|"
                            r"amount|billing|payment|card.?holder|expir")
_PERSONAL = re.compile(r"(?i)\bssn\b|social.?security|passport|tax.?(id|number)|\btin\b|"
                       r"date.?of.?birth|\bdob\b|birth.?date|national.?id|driver.?licen[cs]e")
_KEYLIKE = re.compile(r"(?:\b(?:sk|pk|rk)[-_](?:live|test)?[-_]?[A-Za-z0-9]{16,}|"
                      r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bxox[abpr]-[A-Za-z0-9-]{10,}|"
                      r"\bAKIA[0-9A-Z]{16}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----|"
                      r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.)")


def download_kind(path: str) -> str | None:
    """Return the risky type a URL path or file name shows (``exe``, ``zip``...), or None."""
    m = _DOWNLOAD_EXT.search(path)
    return m.group(1).lower() if m else None


def browser_rules() -> list[RiskRule]:
    """Return the 16 browser rules (see the module's table)."""
    spec: list[tuple[str, Risk, str]] = [
        ("new-domain", Risk.MEDIUM, NAVIGATE),
        ("credentials-in-url", Risk.HIGH, NAVIGATE),
        ("download-url", Risk.HIGH, NAVIGATE),
        ("click-destructive", Risk.CRITICAL, CLICK),
        ("click-payment", Risk.CRITICAL, CLICK),
        ("click-send", Risk.HIGH, CLICK),
        ("click-confirm", Risk.HIGH, CLICK),
        ("click-account-security", Risk.HIGH, CLICK),
        ("click-form-submit", Risk.MEDIUM, CLICK),
        ("click-post-form", Risk.HIGH, CLICK),
        ("click-download", Risk.HIGH, CLICK),
        ("click-external-link", Risk.MEDIUM, CLICK),
        ("type-payment-field", Risk.CRITICAL, TYPE),
        ("type-personal-data", Risk.HIGH, TYPE),
        ("type-secret-value", Risk.CRITICAL, TYPE),
        ("type-submit", Risk.MEDIUM, TYPE),
    ]
    return [RiskRule(f"browser-{name}", level, [tool], when=f"browser:{name}")
            for name, level, tool in spec]


def browser_conditions(manager: Any, *, is_secret: Callable[[str], bool] | None = None
                       ) -> dict[str, ConditionFn]:
    """Return the conditions of :func:`browser_rules`, reading ``manager``'s sessions.

    Args:
        manager: The :class:`~bastion.security.browser.manager.BrowserManager`.
        is_secret: Whether a text contains a secret bastion holds (the redactor's view).

    """

    def element(args: Mapping[str, Any], sid: str | None) -> Any:
        ref = args.get("ref")
        return manager.element(sid, ref) if isinstance(ref, str) else None

    def label_match(pattern: re.Pattern[str]) -> ConditionFn:
        def check(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
            el = element(args, sid)
            if el is None:
                return None
            m = pattern.search(el.label)
            return f"{el.role} {el.name or el.label!r} ({m.group(0).lower()})" if m else None
        return check

    def new_domain(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
        host = (urlsplit(str(args.get("url", ""))).hostname or "").lower()
        return host if host and host not in manager.visited(sid) else None

    def credentials_in_url(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
        parts = urlsplit(str(args.get("url", "")))
        if parts.username or parts.password:
            return "user info in the URL"
        keys = [k for k, _ in parse_qsl(parts.query) if _URL_SECRET.match(k)]
        return f"query parameter {keys[0]!r}" if keys else None

    def flagged(sid: str | None, url: str) -> str | None:
        check = getattr(manager, "download_flag", None)
        return check(sid, url) if check is not None and url else None

    def download_url(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
        url = str(args.get("url", ""))
        kind = download_kind(urlsplit(url).path)
        return f"{kind} file" if kind else flagged(sid, url)

    def form_submit(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
        el = element(args, sid)
        if el is None or not el.facts.get("submits"):
            return None
        return f"submits a {el.facts.get('form_method', 'get').upper()} form"

    def post_form(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
        el = element(args, sid)
        if el is None or not el.facts.get("submits") or el.facts.get("form_method") != "post":
            return None
        return f"POST to {el.facts.get('form_action') or 'the page'}"

    def click_download(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
        el = element(args, sid)
        if el is None:
            return None
        href = str(el.facts.get("href") or "")
        if el.facts.get("download"):
            return f"download link {href or el.name!r}"
        kind = download_kind(urlsplit(href).path) if href else None
        return f"link to a {kind} file" if kind else flagged(sid, href)

    def external_link(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
        el = element(args, sid)
        href = str(el.facts.get("href") or "") if el is not None else ""
        if not href.startswith(("http://", "https://")):
            return None
        here = (urlsplit(manager.current_url(sid) or "").hostname or "").lower()
        there = (urlsplit(href).hostname or "").lower()
        return f"leaves {here} for {there}" if there and there != here else None

    def field_match(pattern: re.Pattern[str]) -> ConditionFn:
        def check(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
            el = element(args, sid)
            if el is None:
                return None
            f = el.facts
            hay = " ".join(str(f.get(k, "")) for k in ("name", "id", "label", "aria_label",
                                                        "placeholder", "autocomplete"))
            m = pattern.search(f"{el.name} {hay}")
            if m is None and str(f.get("autocomplete", "")).startswith("cc-") \
                    and pattern is _PAYMENT_FIELD:
                return f"field {el.name!r} (autocomplete={f.get('autocomplete')})"
            return f"field {el.name or f.get('name')!r} ({m.group(0).lower()})" if m else None
        return check

    def secret_value(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
        text = str(args.get("text", ""))
        if is_secret is not None and is_secret(text):
            return "the text contains a secret bastion holds"
        return "the text looks like a key or token" if _KEYLIKE.search(text) else None

    def type_submit(tool: Any, args: Mapping[str, Any], sid: str | None) -> str | None:
        return "presses Enter (submits the form)" if args.get("submit") else None

    return {
        "browser:new-domain": new_domain,
        "browser:credentials-in-url": credentials_in_url,
        "browser:download-url": download_url,
        "browser:click-destructive": label_match(_DESTRUCTIVE),
        "browser:click-payment": label_match(_PAYMENT),
        "browser:click-send": label_match(_SEND),
        "browser:click-confirm": label_match(_CONFIRM),
        "browser:click-account-security": label_match(_SECURITY),
        "browser:click-form-submit": form_submit,
        "browser:click-post-form": post_form,
        "browser:click-download": click_download,
        "browser:click-external-link": external_link,
        "browser:type-payment-field": field_match(_PAYMENT_FIELD),
        "browser:type-personal-data": field_match(_PERSONAL),
        "browser:type-secret-value": secret_value,
        "browser:type-submit": type_submit,
    }


class BrowserGuardStage:
    """Gateway stage (before risk/approval): refuse typing into password and secret fields.

    It first reads the live DOM facts of the element a click or type targets, so the risk
    rules classify the element as it is now (label, form, link), not as it was last read.

    No human is asked: the agent must never type a password, whoever approves. The refusal is
    an ordinary denied result, so the audit stage records it.
    """

    def __init__(self, manager: Any) -> None:
        self.manager = manager

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Refresh the target's facts; deny ``browser_type`` into a secret-looking field."""
        ref = req.call.arguments.get("ref")
        if req.tool.name in (CLICK, TYPE) and isinstance(ref, str):
            inspect = getattr(self.manager, "inspect", None)
            if inspect is not None:  # the risk rules then judge what is on the page now
                await inspect(req.session_id, ref.strip())
        if req.tool.name == TYPE:
            el = self.manager.element(req.session_id, ref) if isinstance(ref, str) else None
            why = el.secret_reason() if el is not None else None
            if why is not None:
                req.annotations["browser_guard"] = "password-field"
                return denied(req, f"typing into {ref} is refused: {why}. bastion never lets "
                                   "the agent type passwords or secrets; configured sites are "
                                   "logged in by bastion itself (browser.sites)")
        return await nxt(req)

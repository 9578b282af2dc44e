"""Signed webhook triggers: ``POST /v1/tasks/NAME/trigger`` with an HMAC over time, nonce and body.

A sender holds the task's secret (shown once by ``bastion task add NAME --webhook``) and sends::

    X-Bastion-Timestamp: 1767225600          (Unix seconds, now)
    X-Bastion-Nonce: 3f2a9c...               (16-128 of A-Z a-z 0-9 _ -, never reused)
    X-Bastion-Signature: sha256=<hex of HMAC-SHA-256(secret, "<timestamp>.<nonce>." + body)>

The server refuses, in this order: a timestamp further than ``tasks.webhook_window_s`` from
its clock (stale or future), a signature that does not match, and a nonce it has accepted
before for the task (a replay; the nonces survive restarts in the task store). A nonce is
recorded only once the signature matched, so a forger cannot use up a sender's nonces.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from bastion.errors import AuthError

MAX_BODY = 64 * 1024
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
PREFIX = "sha256="
SIGN_FIX = ("sign with the task's secret: X-Bastion-Signature: sha256=HMAC-SHA-256(secret, "
            "'<timestamp>.<nonce>.' + body) (bastion task secret NAME --rotate shows a new one)")


class TriggerRefused(AuthError):
    """A webhook trigger whose timestamp, signature or nonce is not acceptable (401)."""

    def __init__(self, message: str, *, code: str, fix: str) -> None:
        super().__init__(message, fix=fix)
        self.code = code


def signature(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """Return the ``X-Bastion-Signature`` value for a trigger (what a sender computes)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{nonce}.".encode() + body, hashlib.sha256)
    return PREFIX + mac.hexdigest()


def check(secret: str, timestamp: str, nonce: str, sig: str, body: bytes, *, now: float,
          window_s: float) -> None:
    """Raise :class:`TriggerRefused` unless the timestamp is fresh and the signature matches.

    The nonce's freshness is the store's (``TaskStore.use_nonce``), checked after this.
    """
    if not TIMESTAMP_RE.fullmatch(timestamp) or abs(now - int(timestamp)) > window_s:
        raise TriggerRefused(
            f"the trigger's timestamp is more than {window_s:g} s from the server's clock",
            code="stale_timestamp",
            fix="send X-Bastion-Timestamp: the current Unix time in seconds (check the "
                "sender's clock)")
    if not NONCE_RE.fullmatch(nonce):
        raise TriggerRefused("the trigger's nonce is not 16-128 letters, digits, _ or -",
                             code="bad_nonce", fix="send a fresh random X-Bastion-Nonce")
    expected = signature(secret, timestamp, nonce, body)
    if not hmac.compare_digest(expected.encode(), sig.strip().encode()):
        raise TriggerRefused("the trigger's signature does not match", code="bad_signature",
                             fix=SIGN_FIX)


def replayed() -> TriggerRefused:
    """Return the refusal of a nonce already used for this task."""
    return TriggerRefused("this trigger's nonce was used before (a replay)", code="replayed",
                          fix="send every trigger with a new random X-Bastion-Nonce")

"""The secret scanner: token formats, entropy, held values in encodings, policies."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from bastion.security.redact import MASK, Redactor
from bastion.security.scanner import SecretScanner, encodings

HELD = "s3cr3t-Canary/Value+42"

POSITIVE = [
    "AKIAUJZDEGXDNCF32EPF",
    "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5",
    "github_pat_11AQED7UY0kWvj7FAc9QeWJ_" + "KY40uvSwMFLZDe1f8rEShGAkWvj7FAc9QeWJKY40uvSwMFLZDe1f8",
    "glpat-xYz1R8fK2mQ7vL3pN6tW",
    "xoxb-472910385612-5830291746502-hGAkWvj7FAc9QeWJKY40uvSw",
    "sk-proj-" + "Ab1" * 16,
    "sk-ant-api03-" + "x1Y2" * 24,
    "AIzaSyA9ZhyiA4uoRgnatmUdjAWtGSUqsajAIxN",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    "hvs.CAESIJ1a2b3c4d5e6f7g8h9i0jQedUStPKR",
    "AGE-SECRET-KEY-1QXRVEJH9S4NQU0FPD6V79ESZQ8S6PXH3L8V40EVPTHFH6KNKD4DQ7SKC4P",
]


@pytest.mark.parametrize("token", POSITIVE)
def test_known_formats_are_masked(token: str) -> None:
    out = SecretScanner(entropy=False).redact(f"here: {token} end")
    assert token not in out and MASK in out and out.startswith("here: ")


@pytest.mark.parametrize(
    "text",
    [
        "postgres://admin:hunter2pw@db.internal:5432/app",
        'DB_PASSWORD="correct horse"'.replace(" ", "-"),
        "Authorization: Bearer QedUStPKR0CsTy4Qwb8Dxq",
        "aws_secret_access_key = 2hpChYgCfrL1spNxnyVmihA/2O76UMFxFkM/R5Kj",
    ],
)
def test_context_rules(text: str) -> None:
    out = SecretScanner(entropy=False).redact(text)
    assert MASK in out


@pytest.mark.parametrize(
    "text",
    [
        "ls -la /usr/local/lib/python3.11/site-packages",
        "The quick brown fox jumps over the lazy dog.",
        "def test_known_formats_are_masked(token: str) -> None:",
        "commit 3f2a1b9 fix the monkey: banana parser",
        "https://example.com/docs/getting-started?page=2",
        "total 48 drwxr-xr-x 2 root root 4096 Nov 25 12:00 workspace",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert SecretScanner().redact(text) == text


def test_high_entropy_string() -> None:
    s = SecretScanner()
    assert s.redact("key material x9K2mQ7vL3pR8tY1wZ5nB4cF6hJ0sD2g ok") == (
        f"key material {MASK} ok")
    assert [f.rule for f in s.scan("x9K2mQ7vL3pR8tY1wZ5nB4cF6hJ0sD2g")] == ["high_entropy"]


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"abcd"])
def test_held_value_in_base64_at_any_alignment(prefix: bytes) -> None:
    s = SecretScanner([HELD], entropy=False)
    blob = base64.b64encode(prefix + HELD.encode() + b" trailing bytes").decode()
    out = s.redact(f"data {blob}")
    assert MASK in out and blob not in out


def test_held_value_raw_hex_url_and_urlsafe() -> None:
    s = SecretScanner([HELD], entropy=False)
    for form in (HELD, HELD.encode().hex(), HELD.encode().hex().upper(), quote(HELD, safe=""),
                 base64.urlsafe_b64encode(HELD.encode()).decode()):
        assert form not in s.redact(f"<{form}>"), form
    assert len(encodings(HELD)) >= 8


def test_block_policy_withholds_everything() -> None:
    res = SecretScanner([HELD], policy="block").apply(f"ok {HELD} ok")
    assert res.blocked and HELD not in res.text and res.rules == ["held_value"]


def test_redactor_masks_sensitive_keys_and_nested_data() -> None:
    r = Redactor([HELD])
    out = r.data({"password": "x", "items": [HELD, {"api_key": "abc"}], "n": 3, "ok": True})
    assert out == {"password": MASK, "items": [MASK, {"api_key": MASK}], "n": 3, "ok": True}

"""#16 item 6: redaction masks secret values, not references to them or public-key pins."""

from __future__ import annotations

from bastion.security.scanner import MASK, SecretScanner

PIN_A = "sha256/Vq0xYkT8nW1lQ3pXk9sZ2aB4cD6eF8gH0iJ2kL4mN6o="
PIN_B = "sha256/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/abcde="


def test_pins_and_references_stay_readable() -> None:
    s = SecretScanner()
    mismatch = f"pin mismatch for models.example.org:443: expected {PIN_A}, presented {PIN_B}"
    assert s.redact(mismatch) == mismatch
    detail = '{"ref": "secret://vault/app/db#password", "version": 3}'
    assert s.redact(detail) == detail
    assert s.redact("pin: secret://env/hsm_pin") == "pin: secret://env/hsm_pin"


def test_values_inside_reference_shapes_are_still_masked() -> None:
    s = SecretScanner()
    s.add_known("hunter2-very-secret")
    assert MASK in s.redact("secret://vault/hunter2-very-secret")  # a held value
    assert MASK in s.redact("secret://vault/ghp_hGAkWvj7FAc9QeWJKY40uvSwMFLZDe1f8rES")  # format
    assert MASK in s.redact("secret://vault/x9Kq2LmZ7pQ4rT8vW1yB3nC6dF5gH#k")  # random, not a name
    assert MASK in s.redact("token=Vq0xYkT8nW1lQ3pXk9sZ2aB4cD6eF8gH0iJ2kL4mN6o")  # no pin prefix

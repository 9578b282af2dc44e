"""Real presidio + spaCy: the PII classes a user expects are found and routed by policy."""

from __future__ import annotations

import pytest

from bastion.messages import Message
from bastion.privacy.policy import PrivacyPolicy

CASES = [
    ("Please forward this to Margaret Oyelaran tomorrow.", "PERSON", "Margaret Oyelaran"),
    ("Contact me at m.oyelaran@example.net if needed.", "EMAIL_ADDRESS", "m.oyelaran@example.net"),
    ("My phone number is 212-555-0148.", "PHONE_NUMBER", "212-555-0148"),
    ("Charge card 4111 1111 1111 1111 please.", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("Wire it to IBAN GB82WEST12345698765432 today.", "IBAN_CODE", "GB82WEST12345698765432"),
]


@pytest.mark.parametrize(("text", "cls", "value"), CASES)
def test_detects_each_class(real_policy: PrivacyPolicy, text: str, cls: str, value: str) -> None:
    found = {(e.entity_type, text[e.start : e.end]) for e in real_policy.detector.detect(text)}
    assert (cls, value) in found


def test_routing_by_policy_on_real_detection(real_policy: PrivacyPolicy) -> None:
    redact = real_policy.analyze([Message("user", "Margaret Oyelaran, m.oyelaran@example.net, "
                                                  "212-555-0148: book a table")])
    assert redact.decision.route == "remote"
    sent = redact.send[0].content
    assert "Margaret" not in sent and "example.net" not in sent and "0148" not in sent
    assert "<PERSON_1>" in sent and "<EMAIL_ADDRESS_1>" in sent and "<PHONE_NUMBER_1>" in sent
    for text in ("card 4111 1111 1111 1111", "IBAN GB82WEST12345698765432"):
        d = real_policy.decide([Message("user", text)])
        assert d.route == "local" and d.local_only
    clean = real_policy.decide([Message("user", "What is the boiling point of water?")])
    assert clean.route == "remote" and clean.redacted == 0 and clean.classes == {}

"""Privacy: PII detection and the router that keeps personal data on the local model."""

from bastion.privacy.detect import SECRET, Entity, PiiDetector
from bastion.privacy.placeholders import Pseudonymizer, StreamRestorer
from bastion.privacy.policy import Decision, PrivacyPolicy
from bastion.privacy.router import PrivacyRouter

__all__ = [
    "SECRET",
    "Decision",
    "Entity",
    "PiiDetector",
    "PrivacyPolicy",
    "PrivacyRouter",
    "Pseudonymizer",
    "StreamRestorer",
]

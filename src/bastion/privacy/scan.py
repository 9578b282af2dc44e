"""One scan for the CLI and the API: entities, the routing decision, what the remote would see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.config.model import Config
from bastion.messages import Message
from bastion.privacy.policy import Analysis, PrivacyPolicy


def policy_for_config(config: Config) -> PrivacyPolicy:
    """Return the privacy policy of ``config``, its secret scanner holding bastion's secrets."""
    from bastion.security.scanner import SecretScanner

    held = [s.get_secret_value() for s in (config.api.token, config.model.api_key)
            if s is not None]
    scanner = SecretScanner(held, entropy=config.secrets.scan_entropy)
    return PrivacyPolicy.from_config(config.privacy, scanner)


@dataclass(slots=True)
class ScanReport:
    """The result of scanning one text."""

    text: str
    analysis: Analysis
    enabled: bool

    @property
    def redacted(self) -> str:
        """The text as the remote model would get it ('' when the request stays local)."""
        d = self.analysis.decision
        return self.analysis.send[0].content if d.route == "remote" else ""

    def entities(self, *, values: bool) -> list[dict[str, Any]]:
        """Return the spans found; ``values`` adds the matched text (CLI only, not the API)."""
        out = []
        for _, _, e in self.analysis.entities:
            row: dict[str, Any] = {"type": e.entity_type, "classes": list(e.classes),
                                   "start": e.start, "end": e.end, "score": round(e.score, 3)}
            if values:
                row["text"] = self.text[e.start : e.end]
            out.append(row)
        return out

    def to_dict(self, *, values: bool = False) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "enabled": self.enabled,
            "entities": self.entities(values=values),
            "decision": self.analysis.decision.to_dict(),
            "redacted": self.redacted,
        }


def scan_text(policy: PrivacyPolicy, text: str, *, enabled: bool = True) -> ScanReport:
    """Scan ``text`` as one user message."""
    return ScanReport(text, policy.analyze([Message("user", text)]), enabled)

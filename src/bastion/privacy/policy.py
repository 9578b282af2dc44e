"""The routing policy: which PII classes keep a request local, which are replaced, which pass.

:class:`PrivacyPolicy` needs no model: the router asks it where a request goes and what the
remote may see; ``bastion privacy scan`` and ``POST /v1/privacy/scan`` show the same answer.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.messages import Message, ToolCall
from bastion.privacy.detect import Entity, PiiDetector
from bastion.privacy.placeholders import Pseudonymizer

PiiPolicy = Literal["local_only", "redact", "allow"]
Route = Literal["local", "remote"]


@dataclass(slots=True, frozen=True)
class Decision:
    """Where one request goes and why (classes and counts only, never values)."""

    route: Route
    redacted: int  # entities replaced by placeholders (remote only)
    classes: dict[str, int]  # detected class -> number of spans
    local_only: tuple[str, ...]  # the classes that kept the request local
    messages: int

    @property
    def label(self) -> str:
        """``local``, ``remote`` or ``remote_redacted``."""
        if self.route == "local":
            return "local"
        return "remote_redacted" if self.redacted else "remote"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the audit log, the CLI and the API)."""
        return {
            "route": self.route,
            "decision": self.label,
            "redacted": self.redacted,
            "classes": dict(self.classes),
            "local_only": list(self.local_only),
            "messages": self.messages,
        }


@dataclass(slots=True)
class Analysis:
    """The decision plus what the remote would be sent."""

    decision: Decision
    send: list[Message]
    pseudonyms: Pseudonymizer
    entities: list[tuple[int, str, Entity]] = field(default_factory=list)  # (msg, where, span)


class PrivacyPolicy:
    """PII detector plus the per-class policy: analyses requests, decides their route."""

    def __init__(
        self,
        detector: PiiDetector,
        policy: Mapping[str, PiiPolicy] | None = None,
        default_policy: PiiPolicy = "redact",
    ) -> None:
        """Use ``detector``; ``policy`` maps class -> local_only | redact | allow."""
        self.detector = detector
        self.policy: dict[str, PiiPolicy] = dict(policy or {})
        self.default_policy: PiiPolicy = default_policy
        self._nlp_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Any, scanner: Any = None) -> PrivacyPolicy:
        """Build from a :class:`~bastion.config.model.PrivacyConfig`."""
        from bastion.privacy.detect import detector_from_config

        return cls(detector_from_config(cfg, scanner), cfg.policy, cfg.default_policy)

    def policy_for(self, cls: str) -> PiiPolicy:
        """Return the policy of one PII class."""
        return self.policy.get(cls, self.default_policy)

    def _span_policy(self, e: Entity) -> PiiPolicy:
        pols = {self.policy_for(c) for c in e.classes}
        if "local_only" in pols:
            return "local_only"
        return "redact" if "redact" in pols else "allow"

    # ---- analysis ---------------------------------------------------------------------------
    def analyze(self, messages: Sequence[Message]) -> Analysis:
        """Detect PII in every message and decide; builds the redacted copy for the remote."""
        with self._nlp_lock:  # presidio/spaCy: one analysis at a time
            return self._analyze(messages)

    def _analyze(self, messages: Sequence[Message]) -> Analysis:
        texts = [m.content for m in messages]
        texts += [c.arguments_json() for m in messages for c in m.tool_calls]
        pseudo = Pseudonymizer(texts)
        classes: dict[str, int] = {}
        local_only: dict[str, None] = {}
        found: list[tuple[int, str, Entity]] = []
        redacted = 0
        send: list[Message] = []

        def scrub(text: str, idx: int, where: str) -> str:
            nonlocal redacted
            spans = self.detector.detect(text)
            keep: list[Entity] = []
            for e in spans:
                found.append((idx, where, e))
                for c in e.classes:
                    classes[c] = classes.get(c, 0) + 1
                pol = self._span_policy(e)
                if pol == "local_only":
                    local_only.update((c, None) for c in e.classes
                                      if self.policy_for(c) == "local_only")
                elif pol == "redact":
                    keep.append(e)
            redacted += len(keep)
            return pseudo.redact(text, keep) if keep else text

        def scrub_data(value: Any, idx: int, where: str) -> Any:
            if isinstance(value, str):
                return scrub(value, idx, where)
            if isinstance(value, dict):
                return {k: scrub_data(v, idx, where) for k, v in value.items()}
            if isinstance(value, list):
                return [scrub_data(v, idx, where) for v in value]
            return value

        for i, m in enumerate(messages):
            content = scrub(m.content, i, "content") if m.content else m.content
            calls = [ToolCall(c.name, scrub_data(c.arguments, i, "tool_call"), c.id)
                     for c in m.tool_calls]
            send.append(dataclasses.replace(m, content=content, tool_calls=calls))
        route: Route = "local" if local_only else "remote"
        decision = Decision(
            route=route,
            redacted=redacted if route == "remote" else 0,
            classes=classes,
            local_only=tuple(local_only),
            messages=len(messages),
        )
        return Analysis(decision, send if route == "remote" else list(messages), pseudo, found)

    def decide(self, messages: Sequence[Message]) -> Decision:
        """Return where ``messages`` would be routed (nothing is sent or audited)."""
        return self.analyze(messages).decision

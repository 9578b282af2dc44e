"""Features of one tool call for anomaly detection, computed the same way in training and live.

Each subject (the gateway's ``actor``) has a :class:`SubjectState`: which tools and hosts it
has used and its recent calls. A call's features are computed from the state *before* the
call (prequential), so training on the audit history sees new tools and hosts exactly as
the live gateway will; the state is then updated with the call.

Features (all numbers; names in :data:`FEATURE_NAMES`):

- ``tool_rarity``: ``-log((uses + 0.5) / (calls + 1))`` of this tool for the subject
  (Krichevsky-Trofimov smoothing: a tool never used is rarer the longer the history);
- ``hour_sin``/``hour_cos``: local time of day on a circle (23:59 is next to 00:00);
- ``arg_bytes``: ``log1p`` of the JSON size of the arguments;
- ``arg_entropy``: Shannon entropy (bits per character) of the string arguments;
- ``path_depth``: depth of the deepest path argument;
- ``path_escape``: ``..`` components plus absolute or home-rooted paths (leaving the workspace);
- ``network_targets``: distinct hosts/IPs named in the arguments;
- ``new_hosts``: of those, hosts the subject never reached in an allowed call;
- ``ip_literal``: 1 when a target is a bare IP address;
- ``call_rate``: ``log1p`` of the subject's calls in the previous 60 s;
- ``denial_rate``: share of denied calls among the subject's last 20.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.intelligence._extract import path_depth, path_escape, strings, targets

FEATURE_NAMES: tuple[str, ...] = (
    "tool_rarity", "hour_sin", "hour_cos", "arg_bytes", "arg_entropy", "path_depth",
    "path_escape", "network_targets", "new_hosts", "ip_literal", "call_rate", "denial_rate",
)
RATE_WINDOW_S = 60.0
DENIAL_WINDOW = 20
_PATH_KEY = re.compile(r"(?i)(path|file|dir|directory|dest|target|src|source|output)$")


@dataclass(slots=True, frozen=True)
class CallView:
    """What the features need from a call: who, when, which tool, which arguments, outcome."""

    subject: str
    ts: float
    tool: str
    arguments: Mapping[str, Any]
    decision: str | None = None


def entropy(text: str) -> float:
    """Return the Shannon entropy of ``text`` in bits per character."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


@dataclass(slots=True)
class SubjectState:
    """What one subject has done so far (tools, hosts, recent calls)."""

    tools: Counter[str] = field(default_factory=Counter)
    hosts: set[str] = field(default_factory=set)
    calls: int = 0
    recent: deque[float] = field(default_factory=deque)  # timestamps within RATE_WINDOW_S
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=DENIAL_WINDOW))
    last_ts: float = 0.0

    def features(self, call: CallView) -> dict[str, float]:
        """Return the call's features given what came before it (the state is not changed)."""
        args = call.arguments or {}
        found = targets(args)
        paths = list(found.paths)
        for key, value in args.items():
            if isinstance(value, str) and _PATH_KEY.search(str(key)):
                paths.append(value)
        hour = time.localtime(call.ts)
        frac = (hour.tm_hour + hour.tm_min / 60) / 24
        recent = len(self.recent)  # sorted and pruned by update(): skip only stale heads
        for t in self.recent:
            if call.ts - t <= RATE_WINDOW_S:
                break
            recent -= 1
        text = "".join(strings(args))
        return {
            "tool_rarity": -math.log((self.tools[call.tool] + 0.5) / (self.calls + 1)),
            "hour_sin": math.sin(2 * math.pi * frac),
            "hour_cos": math.cos(2 * math.pi * frac),
            "arg_bytes": math.log1p(len(json.dumps(args, ensure_ascii=False, default=str))),
            "arg_entropy": entropy(text),
            "path_depth": float(path_depth(paths)),
            "path_escape": float(path_escape(paths)),
            "network_targets": float(len(found.hosts)),
            "new_hosts": float(sum(1 for h in found.hosts if h not in self.hosts)),
            "ip_literal": 1.0 if found.ips else 0.0,
            "call_rate": math.log1p(recent),
            "denial_rate": (sum(1 for ok in self.outcomes if not ok) / len(self.outcomes)
                            if self.outcomes else 0.0),
        }

    def update(self, call: CallView) -> None:
        """Add the call (its tool and hosts count only once it was allowed)."""
        if call.decision == "allowed":
            self.tools[call.tool] += 1
            self.calls += 1
            self.hosts.update(targets(call.arguments or {}).hosts)
        self.recent.append(call.ts)
        while self.recent and call.ts - self.recent[0] > RATE_WINDOW_S:
            self.recent.popleft()
        self.outcomes.append(call.decision != "denied")
        self.last_ts = max(self.last_ts, call.ts)


def vector(feats: Mapping[str, float]) -> list[float]:
    """Return the features in :data:`FEATURE_NAMES` order."""
    return [float(feats[name]) for name in FEATURE_NAMES]


def replay(calls: Iterable[CallView]) -> tuple[dict[str, list[list[float]]],
                                               dict[str, SubjectState]]:
    """Compute every call's features in order; return rows per subject and the final states."""
    rows: dict[str, list[list[float]]] = {}
    states: dict[str, SubjectState] = {}
    for call in calls:
        state = states.setdefault(call.subject, SubjectState())
        rows.setdefault(call.subject, []).append(vector(state.features(call)))
        state.update(call)
    return rows, states


def view_of(event: Any) -> CallView | None:
    """Return the :class:`CallView` of an audit ``tool_call`` record (else None)."""
    if getattr(event, "kind", None) != "tool_call" or not event.tool:
        return None
    args = event.arguments if isinstance(event.arguments, Mapping) else {}
    return CallView(event.actor or "agent", float(event.ts), event.tool, args, event.decision)

"""Dashboard data: counts, top tools, recent anomalies and alerts, the trust table."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bastion.intelligence.feeds import FeedStore
from bastion.intelligence.trust import TrustManager
from bastion.security.audit import iter_events, open_reader


def summary(db: Path, *, since: float | None = None, trust: TrustManager | None = None,
            feeds: FeedStore | None = None, models: dict[str, Any] | None = None,
            problems: list[str] | None = None, enabled: bool = True) -> dict[str, Any]:
    """Return the security dashboard's data for the last day (or since ``since``)."""
    since = since if since is not None else time.time() - 86400
    conn = open_reader(db)
    try:
        events = list(iter_events(conn, limit=None, since=since, newest_first=False))
    finally:
        conn.close()
    decisions: Counter[str] = Counter()
    tools: Counter[str] = Counter()
    risks: Counter[str] = Counter()
    anomalies, alerts, hits = [], [], []
    auto = 0
    for e in events:
        d = e.detail if isinstance(e.detail, Mapping) else {}
        if e.kind == "tool_call":
            decisions[e.decision or "?"] += 1
            tools[e.tool or "?"] += 1
            risks[e.risk or "?"] += 1
        elif e.kind == "intel.assessment":
            threat = d.get("threat") or {}
            row = {"id": e.id, "ts": e.ts, "tool": e.tool, "subject": d.get("subject"),
                   "score": threat.get("score"), "action": threat.get("action"),
                   "reasons": d.get("reasons", [])}
            if d.get("flagged"):
                anomalies.append(row)
            if threat.get("hits"):
                hits.append(row)
        elif e.kind == "intel.alert":
            alerts.append({"id": e.id, "ts": e.ts, "rule": d.get("rule"),
                           "severity": e.decision, "message": d.get("message"),
                           "delivered": d.get("delivered"), "failed": d.get("failed")})
        elif e.kind == "approval.decision" and e.actor == "trust":
            auto += 1
    if trust is None:
        trust = TrustManager()
        conn = open_reader(db)
        try:
            recent = list(iter_events(conn, limit=50_000, since=time.time() - 120 * 86400,
                                      kinds=("tool_call", "intel.assessment")))
            trust.replay(reversed(recent))
        finally:
            conn.close()
    return {
        "enabled": enabled,
        "since": since,
        "calls": sum(decisions.values()),
        "decisions": dict(decisions),
        "risks": dict(risks),
        "top_tools": tools.most_common(10),
        "anomalies": anomalies[-50:][::-1],
        "threat_hits": hits[-50:][::-1],
        "alerts": alerts[-50:][::-1],
        "auto_approved": auto,
        "trust": [v.to_dict() for v in trust.table()[:100]],
        "feeds": feeds.list() if feeds is not None else [],
        "models": models or {},
        "problems": problems or [],
    }

"""Compliance report for a period, from the audit log: what ran, who approved, what was refused.

Sections: tool calls by risk and decision; approvals and denials with who decided; secrets
used (names only: the audit never holds values); egress denials; anomalies, threat-intel
hits and alerts; the audit chain's verification. A control table maps the evidence to SOC 2
(CC6.1, CC6.6, CC6.8, CC7.2, CC7.3) and ISO/IEC 27001:2022 Annex A (A.5.15, A.8.7, A.8.12,
A.8.15, A.8.16) with a status per control: ``ok``, ``attention`` (something to look at)
or ``no evidence`` (nothing in the period shows the control working).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from bastion.security.audit import iter_events, open_reader, verify

RISKS = ("low", "medium", "high", "critical")


def build_report(db: Path, since: float, until: float | None = None) -> dict[str, Any]:
    """Return the report for ``[since, until)`` as a JSON-ready mapping."""
    until = until or time.time()
    conn = open_reader(db)
    try:
        events = list(iter_events(conn, limit=None, since=since, until=until,
                                  newest_first=False))
    finally:
        conn.close()
    by_risk: dict[str, Counter[str]] = {r: Counter() for r in RISKS}
    tools: Counter[str] = Counter()
    approvals: list[dict[str, Any]] = []
    approvers: Counter[str] = Counter()
    secrets: Counter[str] = Counter()
    egress: list[dict[str, Any]] = []
    anomalies: list[dict[str, Any]] = []
    intel_hits: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    policy_denials = 0
    for e in events:
        d = e.detail if isinstance(e.detail, Mapping) else {}
        if e.kind == "tool_call":
            by_risk.setdefault(e.risk or "low", Counter())[e.decision or "?"] += 1
            tools[e.tool or "?"] += 1
            for name in d.get("secrets") or []:
                secrets[str(name)] += 1
            if e.decision == "denied" and not d.get("approval"):
                policy_denials += 1
        elif e.kind == "approval.decision":
            who = str(d.get("by") or e.actor or "?")
            approvers[f"{who}:{e.decision}"] += 1
            approvals.append({"id": e.id, "ts": e.ts, "tool": e.tool, "decision": e.decision,
                              "by": who, "reason": d.get("reason"), "risk": e.risk,
                              "session_id": e.session_id})
        elif e.kind.startswith("egress") and e.decision == "denied":
            egress.append({"id": e.id, "ts": e.ts, "tool": e.tool, "kind": e.kind,
                           "target": d.get("name") or d.get("daddr"), "port": d.get("dport")})
        elif e.kind == "intel.assessment":
            threat = d.get("threat") or {}
            if d.get("flagged"):
                an = d.get("anomaly") or {}
                anomalies.append({"id": e.id, "ts": e.ts, "tool": e.tool,
                                  "subject": d.get("subject"), "score": an.get("score"),
                                  "drivers": [x.get("feature") for x in an.get("drivers", [])]})
            for h in threat.get("hits", []):
                intel_hits.append({"id": e.id, "ts": e.ts, "tool": e.tool,
                                   "matched": h.get("matched"), "feed": h.get("feed"),
                                   "action": threat.get("action")})
        elif e.kind == "intel.alert":
            alerts.append({"id": e.id, "ts": e.ts, "rule": d.get("rule"),
                           "severity": e.decision, "count": d.get("count")})
    rep = verify(db)
    calls = sum(sum(c.values()) for c in by_risk.values())
    human = [a for a in approvals if a["by"] not in ("trust", "session-rule", "timeout",
                                                      "default")]
    report: dict[str, Any] = {
        "period": {"since": since, "until": until},
        "generated": time.time(),
        "records": len(events),
        "tool_calls": {"total": calls, "by_tool": dict(tools.most_common()),
                       "by_risk": {r: dict(c) for r, c in by_risk.items()}},
        "approvals": {"total": len(approvals), "by": dict(approvers),
                      "human": len(human),
                      "auto_by_trust": sum(1 for a in approvals if a["by"] == "trust"),
                      "denied": sum(1 for a in approvals if a["decision"] == "denied"),
                      "items": approvals[-200:]},
        "policy_denials": policy_denials,
        "secrets_used": dict(secrets),
        "egress_denials": {"total": len(egress), "items": egress[-200:]},
        "anomalies": {"total": len(anomalies), "items": anomalies[-200:]},
        "threat_intel_hits": {"total": len(intel_hits), "items": intel_hits[-200:]},
        "alerts": {"total": len(alerts), "items": alerts[-200:]},
        "audit_chain": {"ok": rep.ok, "checked": rep.checked, "checkpoints": rep.checkpoints,
                        "first_bad": rep.first_bad, "reason": rep.reason,
                        "summary": rep.summary()},
    }
    report["controls"] = _controls(report)
    return report


def _status(evidence: int, attention: bool) -> str:
    return "attention" if attention else "ok" if evidence else "no evidence"


def _controls(r: dict[str, Any]) -> list[dict[str, str]]:
    calls = r["tool_calls"]["total"]
    high = sum(sum(v.values()) for k, v in r["tool_calls"]["by_risk"].items()
               if k in ("high", "critical"))
    ap = r["approvals"]
    chain = r["audit_chain"]
    an, hits, alerts = (r["anomalies"]["total"], r["threat_intel_hits"]["total"],
                        r["alerts"]["total"])
    eg = r["egress_denials"]["total"]
    rows = [
        ("SOC 2 CC6.1", "ISO 27001 A.5.15, A.8.2", "Logical access: tool policy and approvals",
         f"{calls} calls through the gateway; {ap['human']} human decisions, "
         f"{ap['auto_by_trust']} trust auto-approvals; {r['policy_denials']} policy denials",
         _status(calls, high > 0 and ap["total"] == 0)),
        ("SOC 2 CC6.6", "ISO 27001 A.8.12, A.8.20", "Boundary protection: egress control",
         f"{eg} egress attempts denied; secrets used: {len(r['secrets_used'])} names",
         _status(calls, False)),
        ("SOC 2 CC6.8", "ISO 27001 A.8.7", "Malicious software: threat intelligence",
         f"{hits} calls matched threat-intel indicators", _status(calls, hits > 0)),
        ("SOC 2 CC7.2", "ISO 27001 A.8.16", "Monitoring: anomaly detection and alert rules",
         f"{an} anomalous calls escalated; {alerts} alerts fired", _status(calls, an > 0)),
        ("SOC 2 CC7.3", "ISO 27001 A.5.25", "Security events evaluated",
         f"{ap['denied']} approvals denied; {alerts} alerts", _status(ap["total"] + alerts,
                                                                   alerts > 0)),
        ("SOC 2 CC7.2", "ISO 27001 A.8.15", "Logging: tamper-evident audit chain",
         chain["summary"], "ok" if chain["ok"] else "attention"),
    ]
    return [{"soc2": a, "iso27001": b, "control": c, "evidence": d, "status": s}
            for a, b, c, d, s in rows]


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(r: dict[str, Any]) -> str:
    """Render the report as Markdown."""
    p = r["period"]
    tc = r["tool_calls"]
    out = [f"# bastion compliance report: {_when(p['since'])} to {_when(p['until'])}", "",
           f"Audit chain: **{'VERIFIED' if r['audit_chain']['ok'] else 'FAILED'}** "
           f"({_cell(r['audit_chain']['summary'])})", "",
           "## Controls", "", "| SOC 2 | ISO 27001 | Control | Evidence | Status |",
           "|---|---|---|---|---|"]
    out += [f"| {c['soc2']} | {c['iso27001']} | {c['control']} | {_cell(c['evidence'])} | "
            f"{c['status']} |" for c in r["controls"]]
    decisions = sorted({d for v in tc["by_risk"].values() for d in v})
    out += ["", f"## Tool calls ({tc['total']})", "",
            "| risk | " + " | ".join(decisions) + " |", "|---" * (len(decisions) + 1) + "|"]
    for risk, counts in tc["by_risk"].items():
        out.append(f"| {risk} | " + " | ".join(str(counts.get(d, 0)) for d in decisions) + " |")
    if tc["by_tool"]:
        out += ["", "Most used: " + ", ".join(f"{k} ({v})" for k, v in
                                               list(tc["by_tool"].items())[:10])]
    ap = r["approvals"]
    out += ["", f"## Approvals ({ap['total']}: {ap['human']} by people, "
                f"{ap['auto_by_trust']} by trust, {ap['denied']} denied)", ""]
    if ap["items"]:
        out += ["| time | tool | risk | decision | by | reason |", "|---|---|---|---|---|---|"]
        out += [f"| {_when(a['ts'])} | {_cell(a['tool'])} | {a['risk']} | {a['decision']} | "
                f"{_cell(a['by'])} | {_cell(a['reason'] or '')} |" for a in ap["items"][-50:]]
    out += ["", "## Secrets used (names only)", ""]
    out += ([f"- {k}: {v} calls" for k, v in r["secrets_used"].items()] or ["none"])
    eg = r["egress_denials"]
    out += ["", f"## Egress denials ({eg['total']})", ""]
    out += [f"- {_when(x['ts'])} {x['tool']}: {x['target']}"
            + (f":{x['port']}" if x.get("port") else "") for x in eg["items"][-50:]] or ["none"]
    an = r["anomalies"]
    out += ["", f"## Anomalies ({an['total']})", ""]
    out += [f"- {_when(x['ts'])} {x['subject']}/{x['tool']}: score {x['score']} "
            f"({', '.join(x['drivers'])})" for x in an["items"][-50:]] or ["none"]
    th = r["threat_intel_hits"]
    out += ["", f"## Threat-intel hits ({th['total']})", ""]
    out += [f"- {_when(x['ts'])} {x['tool']}: {x['matched']} (feed {x['feed']}, "
            f"{x['action']})" for x in th["items"][-50:]] or ["none"]
    al = r["alerts"]
    out += ["", f"## Alerts ({al['total']})", ""]
    out += [f"- {_when(x['ts'])} {x['rule']} ({x['severity']}, {x['count']} events)"
            for x in al["items"][-50:]] or ["none"]
    return "\n".join(out) + "\n"


def to_json(r: dict[str, Any]) -> str:
    """Render the report as JSON."""
    return json.dumps(r, indent=2, ensure_ascii=False, default=str)

"""Security-intelligence routes: the dashboard's data, compliance reports, and its web page.

- ``GET /v1/intel/summary?hours=24``: call counts, top tools, anomalies, threat-intel hits,
  alerts, the trust table, feeds, models and problems.
- ``GET /v1/intel/report?since=7d&until=<time>&format=json|md|markdown``: the compliance
  report (times: Unix seconds, an ISO date or an age).
- ``GET /intel``: a small dashboard page (static and public like ``/approvals``; it asks for
  the API token and reads the JSON route with it).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, PlainTextResponse

from bastion.server.contract import TIME_SCHEMA, errors, media
from bastion.server.deps import BastionApp
from bastion.server.headers import static_page
from bastion.server.responses import IntelReport, IntelSummary
from bastion.timespec import parse_time

router = APIRouter(prefix="/v1/intel", tags=["intel"])
public_router = APIRouter(tags=["intel"])


@router.get("/summary", summary="Security dashboard data")
async def intel_summary(app: BastionApp, hours: float = Query(default=24, gt=0, le=24 * 366)
                        ) -> IntelSummary:
    """Return counts, top tools, anomalies, alerts and trust for the last ``hours``."""
    from bastion.intelligence.setup import feed_store
    from bastion.intelligence.summary import summary

    app.audit.flush()
    intel = app.intel
    models: dict[str, Any] = {}
    if intel is not None and intel.detector is not None:
        models = {s: {"samples": m.samples, "threshold": round(m.threshold, 3),
                      "trained_at": m.trained_at} for s, m in intel.detector.models.items()}
    data = summary(app.audit.path, since=time.time() - hours * 3600,
                   trust=intel.trust if intel is not None else None, feeds=feed_store(),
                   models=models, problems=list(intel.problems) if intel else
                   ["intelligence is off (intelligence.enabled: false)"],
                   enabled=intel is not None)
    if intel is not None:
        data["stages"] = {"assessed": intel.threat_stage.assessed,
                          "flagged": intel.threat_stage.flagged,
                          "auto_approved": intel.trust_stage.auto_approved
                          if intel.trust_stage else 0}
        if intel.alerts is not None:
            data["alert_failures"] = list(intel.alerts.failures)[-10:]
        data["followers"] = [e for f in intel.followers for e in f.errors[-3:]]
    return IntelSummary.model_validate(data)


Time = Annotated[str | None, Query(json_schema_extra=TIME_SCHEMA)]


@router.get("/report", summary="Compliance report", response_model=None,
            responses=media("the report as JSON or Markdown", "text/markdown", json=IntelReport)
            | errors(400))
async def intel_report(
    app: BastionApp, since: Time = None, until: Time = None,
    fmt: Literal["json", "md", "markdown"] = Query(default="json", alias="format"),
) -> Any:
    """Return the compliance report for ``[since, until)`` (default: the last 7 days)."""
    from bastion.intelligence.report import build_report, to_markdown

    app.audit.flush()
    start = parse_time(since)
    rep = build_report(app.audit.path, start if start is not None else time.time() - 7 * 86400,
                       parse_time(until))
    if fmt in ("md", "markdown"):
        return PlainTextResponse(to_markdown(rep), media_type="text/markdown")
    return IntelReport.model_validate(rep)


@public_router.get("/intel", response_class=HTMLResponse, include_in_schema=False)
async def intel_page() -> HTMLResponse:
    """Serve the dashboard page (static; data comes from the token-protected route)."""
    return static_page("intel.html")

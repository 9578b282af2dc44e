"""Assembling intelligence from config and attaching its stages to a gateway (``bastion.app``).

Layout under ``HOME/intel``: ``models/`` (anomaly models + HMACs), ``feeds/`` (parsed
threat-intel feeds), ``siem/`` (one cursor per sink).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bastion.config import paths
from bastion.config.model import Config, IntelligenceConfig
from bastion.intelligence.alerts import AlertEngine, make_notifier
from bastion.intelligence.anomaly import AnomalyDetector, TrainReport
from bastion.intelligence.features import SubjectState, replay, view_of
from bastion.intelligence.feeds import FeedStore, IndicatorIndex
from bastion.intelligence.siem import Follower, Shipper, make_sink
from bastion.intelligence.stages import ThreatStage, TrustStage
from bastion.intelligence.tail import AuditTail
from bastion.intelligence.trust import TrustManager
from bastion.security.audit import AuditEvent, AuditLog
from bastion.security.gateway import Gateway, Stage
from bastion.security.policy import ApprovalStage
from bastion.tools.base import Risk

HISTORY_LIMIT = 50_000


def intel_dir() -> Path:
    """Return (and create) ``HOME/intel``."""
    return paths.data_dir("intel")


def feed_store() -> FeedStore:
    """Return the feed store under ``HOME/intel/feeds``."""
    return FeedStore(intel_dir() / "feeds")


def detector(cfg: IntelligenceConfig) -> AnomalyDetector:
    """Return an (unloaded) detector configured from ``cfg``."""
    a = cfg.anomaly
    return AnomalyDetector(intel_dir() / "models", min_samples=a.min_samples,
                           n_estimators=a.n_estimators, threshold=a.threshold)


def history(audit: AuditLog, days: float, *, now: float | None = None) -> list[AuditEvent]:
    """Return recent ``tool_call`` and ``intel.assessment`` records, oldest first."""
    since = (now or time.time()) - days * 86400
    rows = audit.events(kinds=("tool_call", "intel.assessment"), since=since, limit=HISTORY_LIMIT)
    rows.reverse()
    return rows


def train(audit: AuditLog, cfg: IntelligenceConfig) -> list[TrainReport]:
    """Retrain every subject's model from the audit history and save them."""
    det = detector(cfg)
    views = [v for e in history(audit, cfg.anomaly.history_days) if (v := view_of(e))]
    reports, _ = det.train(views)
    det.save()
    return reports


@dataclass
class Intelligence:
    """The assembled intelligence layer of one app."""

    config: IntelligenceConfig
    audit: AuditLog
    detector: AnomalyDetector | None
    index: IndicatorIndex | None
    trust: TrustManager | None
    states: dict[str, SubjectState]
    threat_stage: ThreatStage
    trust_stage: TrustStage | None
    alerts: AlertEngine | None = None
    shippers: list[Shipper] = field(default_factory=list)
    followers: list[Follower] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def stages(self) -> list[Stage]:
        """Return the stages in pipeline order (threat first, then trust)."""
        out: list[Stage] = [self.threat_stage]
        if self.trust_stage is not None:
            out.append(self.trust_stage)
        return out

    def close(self) -> None:
        """Stop followers (a last poll first) and close sinks and notifiers."""
        for f in self.followers:
            f.close()
        self.followers.clear()
        for s in self.shippers:
            s.close()
        if self.alerts is not None:
            self.alerts.close()


def build(config: Config, audit: AuditLog, *, clock: Callable[[], float] | None = None,
          start_followers: bool = True) -> Intelligence:
    """Build detector, feeds, trust and alerting from config and the audit history."""
    cfg = config.intelligence
    problems: list[str] = []
    events = history(audit, max(cfg.anomaly.history_days, cfg.trust.half_life_days * 8),
                     now=clock() if clock else None)
    _, states = replay(v for e in events if (v := view_of(e)))
    det: AnomalyDetector | None = None
    if cfg.anomaly.enabled:
        det = detector(cfg)
        try:
            if det.load() == 0:
                problems.append(f"no anomaly models yet (cold start): `bastion intel train` "
                                f"fits a subject's model once it has {cfg.anomaly.min_samples} "
                                "tool calls")
        except Exception as exc:  # a bad model file must not take the gateway down
            problems.append(f"anomaly models not loaded: {exc}")
            det.models.clear()
    index = feed_store().index() if cfg.threat.enabled else None
    trust: TrustManager | None = None
    trust_stage: TrustStage | None = None
    threshold = Risk.parse(config.security.approval_threshold)
    if cfg.trust.enabled:
        trust = TrustManager(threshold=cfg.trust.threshold,
                             min_observations=cfg.trust.min_observations,
                             half_life_s=cfg.trust.half_life_days * 86400, clock=clock)
        trust.replay(events)
        trust_stage = TrustStage(trust, default_threshold=threshold,
                                 max_risk=Risk.parse(cfg.trust.max_risk), audit=audit)
    threat_stage = ThreatStage(det, index, states, audit=audit, ask_at=cfg.threat.ask_at,
                               deny_at=cfg.threat.deny_at, cold_start=cfg.anomaly.cold_start,
                               clock=clock)
    intel = Intelligence(cfg, audit, det, index, trust, states, threat_stage, trust_stage,
                         problems=problems)
    if cfg.alerts.rules:
        intel.alerts = AlertEngine(cfg.alerts.rules,
                                   [make_notifier(n) for n in cfg.alerts.notifiers],
                                   record=audit.record)
        if start_followers:
            intel.followers.append(_alert_follower(intel.alerts, audit,
                                                   cfg.alerts.poll_interval_s))
    if cfg.siem.sinks and cfg.siem.background:
        cursor_dir = intel_dir() / "siem"
        for s in cfg.siem.sinks:
            ship = Shipper(make_sink(s), s, audit.path, cursor_dir)
            intel.shippers.append(ship)
            if start_followers:
                intel.followers.append(Follower(_pusher(ship), cfg.siem.poll_interval_s,
                                                f"bastion-siem-{s.name}"))
    return intel


def _pusher(ship: Shipper) -> Callable[[], None]:
    def step() -> None:
        ship.push()

    return step


def _alert_follower(engine: AlertEngine, audit: AuditLog, interval: float) -> Follower:
    tail = AuditTail(audit.path)
    state = {"cursor": tail.last_id()}  # alert on what happens from now on

    def step() -> None:
        while True:
            batch = tail.after(state["cursor"], 500)
            if not batch:
                return
            state["cursor"] = batch[-1].id
            engine.feed(batch)

    return Follower(step, interval, "bastion-alerts")


def attach(intel: Intelligence, gateway: Gateway) -> None:
    """Insert the stages, in order, just before the approval stage (which must be there)."""
    for stage in intel.stages():
        gateway.add_stage(stage, before=ApprovalStage)

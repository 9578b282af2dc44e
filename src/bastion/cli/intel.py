"""``bastion intel ...``: anomaly models, threat feeds, trust, alerts, SIEM export, reports."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import out_console
from bastion.cli._options import JsonOpt
from bastion.cli._options import load_config as _config
from bastion.errors import BastionError

console = out_console()
intel_app = typer.Typer(help="Security intelligence: anomalies, threat intel, trust, alerts, "
                             "SIEM export, compliance reports.", no_args_is_help=True)
feeds_app = typer.Typer(help="Threat-intelligence feed files (list, CSV, STIX 2.1).",
                        no_args_is_help=True)
siem_app = typer.Typer(help="Ship the audit log to a SIEM (Splunk HEC, Elasticsearch, "
                            "Datadog, syslog/CEF).", no_args_is_help=True)
alerts_app = typer.Typer(help="Alert rules over audit events.", no_args_is_help=True)
intel_app.add_typer(feeds_app, name="feeds")
intel_app.add_typer(siem_app, name="siem")
intel_app.add_typer(alerts_app, name="alerts")

DbOpt = Annotated[Path | None, typer.Option("--db", help="audit database (default: HOME/audit)")]


def _db(db: Path | None) -> Path:
    from bastion.security.setup import audit_path

    return db or audit_path()


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _history(db: Path, days: float) -> list[Any]:
    from bastion.security.audit import iter_events, open_reader

    conn = open_reader(db)
    try:
        return list(iter_events(conn, limit=None, since=time.time() - days * 86400,
                                kinds=("tool_call", "intel.assessment"), newest_first=False))
    finally:
        conn.close()


@intel_app.command("train")
def train_cmd(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Retrain every subject's anomaly model from the audit history (saved, HMAC-signed)."""
    from bastion.intelligence.features import view_of
    from bastion.intelligence.setup import detector

    cfg = _config().intelligence
    det = detector(cfg)
    views = [v for e in _history(_db(db), cfg.anomaly.history_days) if (v := view_of(e))]
    reports, _ = det.train(views)
    det.save()
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in reports]))
        return
    if not reports:
        typer.echo("no tool calls in the audit history yet; every subject is in cold start")
        return
    for r in reports:
        if r.status == "trained":
            typer.echo(f"{r.subject}: trained on {r.samples} calls, threshold "
                       f"{r.threshold:.3f} ({r.seconds:.2f}s)")
        else:
            typer.echo(f"{r.subject}: cold start ({r.samples}/{cfg.anomaly.min_samples} calls)")


@intel_app.command("status")
def status_cmd(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Show whether intelligence is on, models, feeds, trust and the last day's findings."""
    from bastion.intelligence.setup import detector, feed_store
    from bastion.intelligence.summary import summary

    config = _config()
    cfg = config.intelligence
    det = detector(cfg)
    problems: list[str] = []
    try:
        det.load()
    except BastionError as exc:
        problems.append(exc.user_text())
    models = {s: {"samples": m.samples, "threshold": round(m.threshold, 3),
                  "trained_at": m.trained_at} for s, m in det.models.items()}
    if not models:
        problems.append(f"no anomaly models yet (cold start): `bastion intel train` fits a "
                        f"subject's model once it has {cfg.anomaly.min_samples} tool calls "
                        "(intelligence.anomaly.min_samples)")
    path = _db(db)
    if not path.exists():
        data: dict[str, Any] = {"enabled": cfg.enabled, "calls": 0, "models": models,
                                "feeds": feed_store().list(), "problems": problems,
                                "trust": [], "anomalies": [], "alerts": [], "threat_hits": []}
    else:
        data = summary(path, feeds=feed_store(), models=models, problems=problems,
                       enabled=cfg.enabled)
    if as_json:
        typer.echo(json.dumps(data, default=str))
        return
    state = "on" if cfg.enabled else "off (set intelligence.enabled: true)"
    typer.echo(f"intelligence: {state}")
    typer.echo(f"last 24 h: {data['calls']} tool calls, {len(data['anomalies'])} anomalies, "
               f"{len(data['threat_hits'])} threat-intel hits, {len(data['alerts'])} alerts")
    for subject, m in models.items():
        typer.echo(f"model {subject}: {m['samples']} calls, threshold {m['threshold']}, "
                   f"trained {_when(m['trained_at'])}")
    for f in data["feeds"]:
        typer.echo(f"feed {f['name']}: {f['count']} indicators ({f['format']}), "
                   f"updated {_when(f['updated'])}")
    if data["trust"]:
        table = Table("subject", "tool", "trust", "evidence", "auto-approves")
        for t in data["trust"][:20]:
            table.add_row(escape(t["subject"]), escape(t["tool"]), f"{t['trust']:.2f}",
                          str(t["observations"]), "yes" if t["auto_approves"] else "no")
        console.print(table)
    for p in problems:
        typer.secho(f"note: {p}", fg="yellow")


@intel_app.command("report")
def report_cmd(
    since: Annotated[str, typer.Option("--since", help="start: an age like 7d or a date")] = "7d",
    until: Annotated[str | None, typer.Option("--until", help="end (default: now)")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="md (or markdown) or json")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file")] = None,
    db: DbOpt = None,
) -> None:
    """Compliance report (tool calls, approvals, secrets, egress, anomalies, chain check)."""
    from bastion.cli.audit import parse_time
    from bastion.intelligence.report import build_report, to_json, to_markdown

    if fmt not in ("md", "markdown", "json"):
        raise BastionError(f"unknown report format {fmt!r}",
                           fix="use --format md (or markdown) or json")
    fmt = "md" if fmt == "markdown" else fmt
    start = parse_time(since)
    assert start is not None
    rep = build_report(_db(db), start, parse_time(until))
    text = to_markdown(rep) if fmt == "md" else to_json(rep)
    if output:
        output.write_text(text)
        typer.echo(f"report written to {output}", err=True)
    else:
        typer.echo(text)
    if not rep["audit_chain"]["ok"]:
        raise typer.Exit(2)


@feeds_app.command("add")
def feeds_add(
    file: Annotated[Path, typer.Argument(help="feed file: list, CSV or STIX 2.1 JSON")],
    name: Annotated[str | None, typer.Option("--name", help="feed name (default: file name)")]
    = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, list, csv or stix")] = "auto",
) -> None:
    """Parse a feed file and keep it (the gateway loads it at start)."""
    from bastion.intelligence.setup import feed_store

    if fmt not in ("auto", "list", "csv", "stix"):
        raise BastionError(f"unknown feed format {fmt!r}", fix="use auto, list, csv or stix")
    meta = feed_store().add(file, name=name, fmt=fmt)  # type: ignore[arg-type]
    kinds = ", ".join(f"{v} {k}" for k, v in meta["kinds"].items() if v)
    typer.echo(f"feed {meta['name']}: {meta['count']} indicators ({kinds}) from {meta['format']}")


@feeds_app.command("list")
def feeds_list(as_json: JsonOpt = False) -> None:
    """List stored feeds."""
    from bastion.intelligence.setup import feed_store

    feeds = feed_store().list()
    if as_json:
        typer.echo(json.dumps(feeds))
        return
    if not feeds:
        typer.echo("no feeds; add one with: bastion intel feeds add FILE")
        return
    table = Table("name", "format", "indicators", "updated", "source")
    for f in feeds:
        table.add_row(escape(f["name"]), f["format"], str(f["count"]), _when(f["updated"]),
                      escape(f["source"]))
    console.print(table)


@feeds_app.command("update")
def feeds_update(
    which: Annotated[str | None, typer.Argument(help="feed name or file (default: all)")] = None,
) -> None:
    """Re-read feed files from their source paths."""
    from bastion.intelligence.setup import feed_store

    for meta in feed_store().update(which):
        typer.echo(f"feed {meta['name']}: {meta['count']} indicators")


@feeds_app.command("remove")
def feeds_remove(name: Annotated[str, typer.Argument(help="feed name")]) -> None:
    """Forget a feed."""
    from bastion.intelligence.setup import feed_store

    feed_store().remove(name)
    typer.echo(f"removed feed {name}")


@intel_app.command("check")
def check_cmd(
    tool: Annotated[str, typer.Argument(help="tool name")],
    arguments: Annotated[str, typer.Argument(help="arguments as JSON")] = "{}",
    actor: Annotated[str, typer.Option("--actor", help="subject")] = "agent",
    risk: Annotated[str, typer.Option("--risk", help="risk level of the call")] = "medium",
    db: DbOpt = None,
) -> None:
    """Score a hypothetical call: anomaly, threat-intel hits and threat score (nothing runs)."""
    from bastion.intelligence.features import CallView, replay, view_of
    from bastion.intelligence.setup import detector, feed_store
    from bastion.intelligence.threat import score
    from bastion.tools.base import Risk

    try:
        args = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise BastionError(f"arguments are not JSON: {exc}", fix="quote them: '{\"url\": ...}'"
                           ) from exc
    cfg = _config().intelligence
    det = detector(cfg)
    det.load()
    path = _db(db)
    events = _history(path, cfg.anomaly.history_days) if path.exists() else []
    _, states = replay(v for e in events if (v := view_of(e)))
    from bastion.intelligence.features import SubjectState

    view = CallView(actor, time.time(), tool, args)
    a = det.assess(view, states.get(actor, SubjectState()))
    hits = feed_store().index().match(args)
    t = score(Risk.parse(risk), a, hits, ask_at=cfg.threat.ask_at, deny_at=cfg.threat.deny_at)
    typer.echo(json.dumps({"threat": t.to_dict(), "anomaly": a.to_dict()}, indent=2))


def _sinks(name: str | None) -> list[Any]:
    cfg = _config().intelligence.siem
    sinks = [s for s in cfg.sinks if name is None or s.name == name]
    if not sinks:
        raise BastionError(f"no SIEM sink {name!r}" if name else "no SIEM sinks configured",
                           fix="add intelligence.siem.sinks to bastion.yaml")
    return sinks


@siem_app.command("push")
def siem_push(
    sink: Annotated[str | None, typer.Option("--sink", help="sink name (default: all)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="at most N records")]
    = None,
    db: DbOpt = None,
) -> None:
    """Ship records after each sink's cursor (resumes where the last push stopped)."""
    from bastion.intelligence.setup import intel_dir
    from bastion.intelligence.siem import Shipper, make_sink

    for s in _sinks(sink):
        ship = Shipper(make_sink(s), s, _db(db), intel_dir() / "siem")
        try:
            n = ship.push(limit)
            typer.echo(f"{s.name}: shipped {n} records, {ship.pending()} pending")
        finally:
            ship.close()


@siem_app.command("status")
def siem_status(db: DbOpt = None) -> None:
    """Show each sink's cursor and how many records wait."""
    from bastion.intelligence.setup import intel_dir
    from bastion.intelligence.siem import Shipper, make_sink

    for s in _sinks(None):
        ship = Shipper(make_sink(s), s, _db(db), intel_dir() / "siem")
        try:
            last, _ = ship.cursor.read()
            typer.echo(f"{s.name} ({s.type}): cursor at {last}, {ship.pending()} pending")
        finally:
            ship.close()


@alerts_app.command("list")
def alerts_list(db: DbOpt = None, limit: Annotated[int, typer.Option("-n")] = 20) -> None:
    """Show the configured rules and the most recent alerts."""
    from bastion.security.audit import iter_events, open_reader

    cfg = _config().intelligence.alerts
    for r in cfg.rules:
        m = {k: v for k, v in r.match.model_dump().items() if v is not None}
        typer.echo(f"rule {r.name}: {r.threshold} x {m} in {r.window_s:g}s -> "
                   f"{', '.join(r.notify) or 'audit only'}")
    path = _db(db)
    if path.exists():
        conn = open_reader(path)
        try:
            for e in iter_events(conn, limit=limit, kind="intel.alert"):
                d = e.detail or {}
                typer.echo(f"{_when(e.ts)} {e.decision}: {d.get('message')}")
        finally:
            conn.close()


@alerts_app.command("test")
def alerts_test(notifier: Annotated[str, typer.Argument(help="notifier name")]) -> None:
    """Send a test alert to one notifier."""
    from bastion.intelligence.alerts import Alert, make_notifier

    cfg = _config().intelligence.alerts
    found = [n for n in cfg.notifiers if n.name == notifier]
    if not found:
        raise BastionError(f"no notifier {notifier!r}",
                           fix="add it under intelligence.alerts.notifiers")
    now = time.time()
    make_notifier(found[0]).send(Alert("test", "info", 1, 0, {}, now, now, [],
                                       "bastion test alert"))
    typer.echo(f"sent a test alert to {notifier}")


@intel_app.command("trust")
def trust_cmd(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Show trust per (subject, tool) rebuilt from the audit log."""
    from bastion.intelligence.trust import TrustManager

    cfg = _config().intelligence.trust
    tm = TrustManager(threshold=cfg.threshold, min_observations=cfg.min_observations,
                      half_life_s=cfg.half_life_days * 86400)
    tm.replay(_history(_db(db), cfg.half_life_days * 8))
    rows = [v.to_dict() for v in tm.table()]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("subject", "tool", "trust", "good", "bad", "evidence", "auto-approves")
    for t in rows:
        table.add_row(escape(t["subject"]), escape(t["tool"]), f"{t['trust']:.2f}",
                      f"{t['good']:.1f}", f"{t['bad']:.1f}", str(t["observations"]),
                      "yes" if t["auto_approves"] else "no")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``bastion intel ...``."""
    app.add_typer(intel_app, name="intel")

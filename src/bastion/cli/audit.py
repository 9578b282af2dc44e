"""``bastion audit events|tools|security|stats|export|verify``: read and check the audit log."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from bastion import timespec
from bastion.cli._console import out_console
from bastion.cli._sessions import record_keys, session_names
from bastion.cli._terminal import visible
from bastion.config.loader import load
from bastion.errors import AuditError, CryptoError
from bastion.security.audit import AuditEvent, iter_events, open_reader, stats, verify
from bastion.security.audit_csv import write_csv

console = out_console()
audit_app = typer.Typer(help="Read, export and verify the tamper-evident audit log.",
                        no_args_is_help=True)

SECURITY_KINDS = ("approval.requested", "approval.decision", "approval.threshold",
                  "audit.retention", "egress", "policy", "security")

DbOpt = Annotated[Path | None, typer.Option("--db", help="audit database (default: HOME/audit)")]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="only newer: 2026-01-31, 2026-01-31T12:00 or an age like 30m, 2h, 7d")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="only older (same forms)")]
SessionOpt = Annotated[str | None, typer.Option(
    "--session", help="session name or id (records follow a session through renames)")]
ToolOpt = Annotated[str | None, typer.Option("--tool", help="tool name")]
DecisionOpt = Annotated[str | None, typer.Option(
    "--decision", help="allowed, denied, error, approved ...")]
KindOpt = Annotated[str | None, typer.Option("--kind", help="record kind, e.g. tool_call")]
LimitOpt = Annotated[int, typer.Option("--limit", "-n", min=1, help="how many records")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON lines")]


def db_path(db: Path | None) -> Path:
    """Return the audit database ``--db`` names: a file, or a directory holding ``audit.db``."""
    if db is None:
        from bastion.security.setup import audit_path

        return audit_path()
    if db.is_dir():
        db = db / "audit.db"
    if not db.is_file():
        raise AuditError(f"no audit database at {db}",
                         fix="pass --db HOME/audit (or its audit.db), or leave --db out")
    return db




def parse_time(text: str | None) -> float | None:
    """Parse ``--since``/``--until``: an ISO date/time, Unix seconds or an age (``7d``)."""
    return timespec.parse_time(text)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(visible(str(text)).split())  # model-made: no terminal control sequences
    return text if len(text) <= width else text[: width - 1] + "…"


def _session_cell(event: AuditEvent, name: str | None) -> str:
    sid = event.session_id or ""
    return escape(visible(f"{name} ({sid})" if name and name != sid else sid))


def _query(db: Path | None, *, limit: int | None, since: str | None, until: str | None,
           session: str | None, tool: str | None, decision: str | None, kind: str | None,
           kinds: tuple[str, ...] | None = None, newest_first: bool = True,
           model: str | None = None, user: str | None = None) -> Iterator[AuditEvent]:
    keys = record_keys(session) if session is not None else None
    conn = open_reader(db_path(db))
    try:
        yield from iter_events(conn, limit=limit, session_id=keys, tool=tool, kind=kind,
                               decision=decision, since=parse_time(since), until=parse_time(until),
                               kinds=kinds, newest_first=newest_first, model=model, user=user)
    finally:
        conn.close()


def _print(events: list[AuditEvent], as_json: bool, tool_view: bool = False) -> None:
    names = session_names(e.session_id for e in events)
    named = [(e, names.get(e.session_id or "")) for e in events]
    if as_json:
        for e, name in named:
            typer.echo(json.dumps({**e.to_dict(), "session_name": name}, ensure_ascii=False))
        return
    if not events:
        typer.echo("no matching audit records")
        return
    if tool_view:
        table = Table("id", "time", "session", "tool", "decision", "risk", "ms", "arguments",
                      "result")
        for e, name in named:
            table.add_row(str(e.id), _when(e.ts), _session_cell(e, name),
                          escape(_short(e.tool or "")),
                          e.decision or "", e.risk or "",
                          f"{e.duration_ms:.0f}" if e.duration_ms is not None else "",
                          escape(_short(e.arguments, 40)), escape(_short(e.result or "", 40)))
    else:
        table = Table("id", "time", "kind", "actor", "session", "tool", "decision", "detail")
        for e, name in named:
            table.add_row(str(e.id), _when(e.ts), e.kind, escape(e.actor or ""),
                          _session_cell(e, name), escape(_short(e.tool or "")), e.decision or "",
                          escape(_short(e.detail or "", 50)))
    console.print(table)


@audit_app.command("events")
def events_cmd(db: DbOpt = None, since: SinceOpt = None, until: UntilOpt = None,
               session: SessionOpt = None, tool: ToolOpt = None, decision: DecisionOpt = None,
               kind: KindOpt = None, limit: LimitOpt = 50, as_json: JsonOpt = False,
               model: Annotated[str | None, typer.Option(
                   "--model", help="model requests answered by this model: its sha256 (or "
                   "8+ hex digits of it), a server URL or a model id")] = None,
               user: Annotated[str | None, typer.Option(
                   "--user", help="records of this user's API requests (bastion users list)")]
               = None) -> None:
    """Show recent audit records of every kind, newest first."""
    _print(list(_query(db, limit=limit, since=since, until=until, session=session, tool=tool,
                       decision=decision, kind=kind, model=model, user=user)), as_json)


@audit_app.command("tools")
def tools_cmd(db: DbOpt = None, since: SinceOpt = None, until: UntilOpt = None,
              session: SessionOpt = None, tool: ToolOpt = None, decision: DecisionOpt = None,
              limit: LimitOpt = 50, as_json: JsonOpt = False) -> None:
    """Show tool calls with their (redacted) arguments and results."""
    _print(list(_query(db, limit=limit, since=since, until=until, session=session, tool=tool,
                       decision=decision, kind="tool_call")), as_json, tool_view=True)


@audit_app.command("security")
def security_cmd(db: DbOpt = None, since: SinceOpt = None, until: UntilOpt = None,
                 session: SessionOpt = None, tool: ToolOpt = None, decision: DecisionOpt = None,
                 limit: LimitOpt = 50, as_json: JsonOpt = False) -> None:
    """Show security decisions: approvals, denials, retention, egress and policy events."""
    rows = list(_query(db, limit=None, since=since, until=until, session=session, tool=tool,
                       decision=decision, kind=None))
    prefixes = ("approval", "egress", "policy", "security")
    picked = [e for e in rows if e.kind in SECURITY_KINDS or e.kind.startswith(prefixes)
              or (e.kind == "tool_call" and e.decision != "allowed")]
    _print(picked[:limit], as_json)


@audit_app.command("stats")
def stats_cmd(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Count records by kind, decision and tool."""
    conn = open_reader(db_path(db))
    try:
        s = stats(conn)
    finally:
        conn.close()
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    span = (f"{_when(s['first_ts'])} .. {_when(s['last_ts'])}" if s["total"] else "empty")
    typer.echo(f"{s['total']} records ({span}), {s['checkpoints']} signed checkpoints")
    for title in ("by_kind", "by_decision", "by_tool"):
        if s[title]:
            typer.echo(f"{title.replace('_', ' ')}: " + ", ".join(
                f"{k}={v}" for k, v in sorted(s[title].items(), key=lambda kv: -kv[1])))


@audit_app.command("export")
def export_cmd(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file (default: stdout)")]
    = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or csv")] = "jsonl",
    db: DbOpt = None, since: SinceOpt = None, until: UntilOpt = None, session: SessionOpt = None,
    tool: ToolOpt = None, decision: DecisionOpt = None, kind: KindOpt = None,
) -> None:
    """Export records (oldest first) as JSON lines or CSV, with their chain hashes."""
    if fmt not in ("jsonl", "csv"):
        raise AuditError(f"unknown export format {fmt!r}", fix="use --format jsonl or csv")
    rows = _query(db, limit=None, since=since, until=until, session=session, tool=tool,
                  decision=decision, kind=kind, newest_first=False)
    out = output.open("w", newline="") if output else sys.stdout
    n = 0
    try:
        if fmt == "jsonl":
            for e in rows:
                out.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
                n += 1
        else:
            n = write_csv(rows, out)  # formula-looking cells made inert
    finally:
        if output:
            out.close()
    if output:
        typer.echo(f"exported {n} records to {output}", err=True)


@audit_app.command("verify")
def verify_cmd(
    db: DbOpt = None,
    public_key: Annotated[list[str] | None, typer.Option(
        "--public-key", "--pubkey",
        help="trusted key (hex Ed25519, or p256:<hex>); repeat for several")] = None,
    fingerprint: Annotated[list[str] | None, typer.Option(
        "--fingerprint", help="trusted key fingerprint (as bastion init printed it); repeat")]
    = None,
    anchor: Annotated[Path | None, typer.Option(
        "--anchor", help="external copy of signed heads (audit.anchor.file, or a syslog/SIEM "
        "export): detects a rollback")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check chain, signed head and anchors against the pinned key; exit 2 naming the bad record."""
    pins = list(fingerprint or [])
    if not public_key and not pins or anchor is None:
        cfg = load().audit
        if not public_key and not pins:
            pins = list(cfg.key_fingerprints)  # pinned at init, outside the audit directory
        if anchor is None and cfg.anchor is not None and cfg.anchor.file is not None:
            anchor = cfg.anchor.file.expanduser()
    rep = verify(db_path(db), public_keys=public_key or (), fingerprints=pins, anchor=anchor)
    if as_json:
        typer.echo(json.dumps(rep.to_dict()))
    else:
        typer.secho(rep.summary(), fg="green" if rep.ok and rep.pinned else
                    "yellow" if rep.ok else "red")
    if not rep.ok:
        raise typer.Exit(2)


# ---- proofs: bastion audit prove / verify-proof ----------------------------------------------
def _signer(db: Path) -> Any:
    from bastion.crypto.keys import FileSigner
    from bastion.security.signing import audit_signer

    return audit_signer(load()) or FileSigner(db.with_name(db.stem + "-signing.key"))


def prove_cmd(
    event_id: Annotated[int | None, typer.Argument(help="audit record id to prove")] = None,
    count: Annotated[str | None, typer.Option(
        "--count", help="prove how many records match: denied, critical, error, kind:K, "
        "tool:T, decision:D, risk:R")] = None,
    first: Annotated[int | None, typer.Option("--first", help="window start (record id)")]
    = None,
    last: Annotated[int | None, typer.Option("--last", help="window end (record id)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file (default stdout)")]
    = None,
    db: Annotated[Path | None, typer.Option("--db", help="audit database")] = None,
) -> None:
    """Write a signed proof: one record's inclusion, or a zero-knowledge count (--count)."""
    from bastion.security.audit_proofs import prove_count, prove_event

    path = db_path(db)
    signer = _signer(path)
    if count is not None:
        bundle = prove_count(path, count, signer, first=first, last=last,
                             max_records=load().crypto.proof_max_records)
    elif event_id is not None:
        bundle = prove_event(path, event_id, signer)
    else:
        raise CryptoError("name a record id, or --count PREDICATE",
                          fix="bastion audit prove 42  |  bastion audit prove --count denied")
    text = json.dumps(bundle, indent=2, ensure_ascii=False)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n")
        typer.echo(f"wrote {output}", err=True)


def verify_proof_cmd(
    file: Annotated[Path, typer.Argument(help="proof file from audit prove ('-' for stdin)")],
    public_key: Annotated[str | None, typer.Option(
        "--public-key", help="trusted key; default: the trusted-keys file beside the log")]
    = None,
    db: Annotated[Path | None, typer.Option("--db", help="audit database")] = None,
    any_key: Annotated[bool, typer.Option(
        "--any-key", help="accept the key inside the proof (checks math, not origin)")] = False,
) -> None:
    """Verify a proof from ``audit prove`` (exit 2 when it fails)."""
    from bastion.security.audit_proofs import verify_bundle

    text = sys.stdin.read() if str(file) == "-" else file.read_text()
    try:
        bundle = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CryptoError(f"{file} is not JSON", fix="pass the file audit prove wrote") from exc
    trusted: list[str] | None = None
    if public_key:
        trusted = [public_key]
    elif not any_key:
        from bastion.security.audit import trusted_keys

        path = db_path(db)
        pins = load().audit.key_fingerprints  # pinned outside the audit directory
        trusted = trusted_keys(path, pins, [str(bundle.get("public_key", ""))])
        if not trusted and not pins:
            raise CryptoError(f"no trusted keys for {path}",
                              fix="pass --public-key KEY (or --any-key to check the math only)")
    ok, why = verify_bundle(bundle, trusted)
    typer.secho(("ok: " if ok else "FAILED: ") + why, fg="green" if ok else "red")
    if not ok:
        raise typer.Exit(2)



def register(app: typer.Typer) -> None:
    """Add ``bastion audit ...`` (with ``prove`` and ``verify-proof``)."""
    audit_app.command("prove")(prove_cmd)
    audit_app.command("verify-proof")(verify_proof_cmd)
    app.add_typer(audit_app, name="audit")

"""``bastion privacy scan TEXT|--file PATH``: the PII found and where the request would go."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import out_console
from bastion.errors import ConfigError

console = out_console()
privacy_app = typer.Typer(help="PII detection and the privacy router (local vs remote model).",
                          no_args_is_help=True)


@privacy_app.command("scan")
def scan(
    text: Annotated[str | None, typer.Argument(help="text to scan ('-' reads stdin)")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="scan this file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the PII entities in a text and the routing decision the privacy router makes."""
    from bastion.config.loader import load
    from bastion.privacy.scan import policy_for_config, scan_text

    if (text is None) == (file is None):
        raise ConfigError("give either a TEXT or --file PATH",
                          fix="bastion privacy scan 'My name is ...' or --file notes.txt")
    if file is not None:
        try:
            body = file.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}",
                              fix="check the path") from exc
    else:
        body = sys.stdin.read() if text == "-" else str(text)
    cfg = load()
    report = scan_text(policy_for_config(cfg), body, enabled=cfg.privacy.enabled)
    if as_json:
        typer.echo(json.dumps(report.to_dict(values=True), ensure_ascii=False, indent=2))
        return
    rows = report.entities(values=True)
    if rows:
        table = Table("class", "text", "span", "score", "also")
        for r in rows:
            table.add_row(r["type"], escape(r["text"]), f"{r['start']}-{r['end']}",
                          f"{r['score']:.2f}", ", ".join(r["classes"][1:]))
        console.print(table)
    else:
        console.print("no PII found")
    d = report.analysis.decision
    if d.route == "local":
        where = f"[bold]local[/] model only (local_only: {', '.join(d.local_only)})"
    elif d.redacted:
        where = f"[bold]remote[/] model, {d.redacted} value(s) replaced by placeholders"
    else:
        where = "[bold]remote[/] model, sent as is"
    console.print(f"routing: {where}")
    if d.route == "remote" and d.redacted:
        console.print(f"remote sees: {escape(report.redacted)}")
    if not cfg.privacy.enabled:
        console.print("[dim]the privacy router is off (privacy.enabled: false): this is what it "
                      "would do[/]")


def register(app: typer.Typer) -> None:
    """Add ``bastion privacy ...``."""
    app.add_typer(privacy_app, name="privacy")

"""``bastion sessions|search|ingest|knowledge``: manage conversations and knowledge."""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import out_console, progress
from bastion.cli._options import JsonOpt
from bastion.cli._prompt import confirm
from bastion.cli._terminal import visible
from bastion.errors import MemoryStoreError

if TYPE_CHECKING:
    from bastion.memory.persistent import PersistentMemory

console = out_console()


def _open() -> PersistentMemory:
    from bastion.config.loader import load
    from bastion.memory.persistent import PersistentMemory

    cfg = load()
    if not cfg.memory.enabled:
        raise MemoryStoreError(
            "memory is switched off, so no sessions or knowledge are stored",
            fix="bastion config set memory.enabled true",
        )
    return PersistentMemory(cfg.memory, n_ctx=cfg.model.n_ctx, max_tokens=cfg.model.max_tokens)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _one_line(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


sessions_app = typer.Typer(help="List, show, rename, delete and export conversations.",
                           no_args_is_help=True)
knowledge_app = typer.Typer(help="List and remove ingested documents.", no_args_is_help=True)



@sessions_app.command("list")
def sessions_list(as_json: JsonOpt = False) -> None:
    """List sessions, most recently used first."""
    mem = _open()
    try:
        rows = mem.sessions()
    finally:
        mem.close()
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no sessions yet; start one with: bastion chat --session NAME")
        return
    table = Table("name", "id", "messages", "updated")
    for r in rows:
        table.add_row(escape(r.name), r.id, str(r.messages), _when(r.updated_at))
    console.print(table)


@sessions_app.command("show")
def sessions_show(
    name: Annotated[str, typer.Argument(help="session name or id")], as_json: JsonOpt = False
) -> None:
    """Print a session's messages."""
    mem = _open()
    try:
        if as_json:
            typer.echo(mem.export(name, "json"))
            return
        info, msgs = mem.session(name)
    finally:
        mem.close()
    console.print(f"[bold]{escape(info.name)}[/] ({info.id}), {len(msgs)} messages")
    for sm in msgs:
        m = sm.message
        label = {"user": "[cyan]you[/]", "assistant": "[green]bastion[/]",
                 "tool": f"[yellow]tool {escape(visible(m.name or ''))}[/]",
                 "system": "system"}[m.role]
        console.print(f"#{sm.seq} {label}: {escape(visible(m.content))}")
        for c in m.tool_calls:
            call = visible(f"{c.name}({c.arguments_json()})")
            console.print(f"   [dim]-> {escape(call)}[/]")


@sessions_app.command("rename")
def sessions_rename(
    name: Annotated[str, typer.Argument(help="session name or id")],
    new_name: Annotated[str, typer.Argument(help="the new name")],
) -> None:
    """Rename a session (continue it with --session NEW_NAME)."""
    mem = _open()
    try:
        info = mem.rename(name, new_name)
    finally:
        mem.close()
    typer.echo(f"renamed to {info.name} ({info.id})")


@sessions_app.command("delete")
def sessions_delete(
    name: Annotated[str, typer.Argument(help="session name or id")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Delete a session, its messages and their search index entries."""
    mem = _open()
    try:
        info = mem.store.require(name)
        if not confirm(f"delete session {info.name} ({info.messages} messages)?", yes=yes,
                       fix=f"bastion sessions delete {shlex.quote(name)} --yes"):
            raise typer.Exit(1)
        mem.delete(info.id)
    finally:
        mem.close()
    typer.echo(f"deleted {info.name} ({info.messages} messages)")


@sessions_app.command("export")
def sessions_export(
    name: Annotated[str, typer.Argument(help="session name or id")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json or markdown")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write")] = None,
) -> None:
    """Export a session as JSON or Markdown (to stdout or a file)."""
    mem = _open()
    try:
        text = mem.export(name, fmt.lower())
    finally:
        mem.close()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")


def search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    k: Annotated[int, typer.Option("-k", "--limit", min=1, max=100, help="results")] = 10,
    session: Annotated[str | None, typer.Option("--session", help="only this session")] = None,
    docs: Annotated[bool, typer.Option("--docs/--no-docs", help="include documents")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Search past messages (all sessions) and ingested documents by meaning."""
    mem = _open()
    if mem.config.semantic:
        progress("loading the embedding model (a few seconds) ...")
    try:
        results = mem.search(query, k, session=session, documents=docs)
    finally:
        mem.close()
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
        return
    if not results:
        typer.echo("nothing found")
        return
    for r in results:
        if r.kind == "message":
            where = (f"session [bold]{escape(r.source)}[/] #{r.message_id} {r.role} "
                     f"[dim](bastion sessions show {escape(r.source)})[/]")
        else:
            where = f"document [bold]{escape(r.label())}[/]"
        console.print(f"[magenta]{r.score:.3f}[/] {where}")
        console.print(f"      {escape(visible(_one_line(r.text)))}")


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or directories")],
    as_json: JsonOpt = False,
) -> None:
    """Add documents (text, Markdown, PDF, HTML, source code) to the agent's knowledge."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    mem = _open()
    try:
        ingestor = mem.ingestor()
        with Progress(
            TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.description}"), console=Console(stderr=True),
            disable=as_json, transient=True,
        ) as bar:
            task = bar.add_task("", total=None)

            def progress(current: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=Path(current).name)

            report = ingestor.ingest_paths(paths, progress)
    finally:
        mem.close()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    for f in report.files:
        if f.status in ("failed", "skipped"):
            typer.echo(f"{f.status}: {f.source}: {f.detail}", err=True)
    typer.echo(report.summary())


@knowledge_app.command("list")
def knowledge_list(as_json: JsonOpt = False) -> None:
    """List ingested documents."""
    mem = _open()
    try:
        docs = mem.store.documents()
    finally:
        mem.close()
    if as_json:
        typer.echo(json.dumps([d.to_dict() for d in docs], indent=2))
        return
    if not docs:
        typer.echo("no documents yet; add some with: bastion ingest PATH")
        return
    table = Table("source", "kind", "chunks", "id", "ingested")
    for d in docs:
        table.add_row(escape(d.source), d.kind, str(d.chunks), d.id, _when(d.ingested_at))
    console.print(table)


@knowledge_app.command("remove")
def knowledge_remove(
    sources: Annotated[list[str], typer.Argument(help="document path, name or id")],
) -> None:
    """Remove documents from the knowledge base."""
    mem = _open()
    try:
        ingestor = mem.ingestor()
        for s in sources:
            doc = ingestor.remove(s)
            typer.echo(f"removed {doc.source} ({doc.chunks} chunks)")
    finally:
        mem.close()


def register(app: typer.Typer) -> None:
    """Add the memory commands to the ``bastion`` CLI."""
    app.add_typer(sessions_app, name="sessions")
    app.add_typer(knowledge_app, name="knowledge")
    app.command("search")(search)
    app.command("ingest")(ingest)

"""``bastion sandbox``: which isolation this machine offers, run a command, list and kill runs."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import out_console
from bastion.cli._options import JsonOpt
from bastion.config.backends import SANDBOX_BACKENDS
from bastion.errors import BastionError, SandboxError

if TYPE_CHECKING:
    from bastion.security.gateway import ToolResult

sandbox_app = typer.Typer(help="Sandboxes: status, run a command, list and kill runs.",
                          no_args_is_help=True)
_out = out_console(highlight=False)
_err = Console(stderr=True, highlight=False)




@sandbox_app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """Show each backend (available or the fix), which one tools get, and the limits."""
    import shutil

    from bastion.config.loader import load
    from bastion.security.sandbox._cgroup import pids_root
    from bastion.security.sandbox.factory import (
        BACKENDS,
        CODE_TOOLS,
        backend_class,
        engine_report,
        isolation_report,
    )

    config = load()
    backends: dict[str, str | None] = {}
    for kind in BACKENDS:
        try:
            backends[kind] = backend_class(kind).available()
        except (BastionError, ImportError) as exc:
            backends[kind] = str(exc)
    tools = list(dict.fromkeys([*CODE_TOOLS, *sorted(config.security.tool_sandboxes)]))
    isolation = isolation_report(config, tools)
    engines = engine_report()
    cg = pids_root()
    lim = config.security.limits
    missing = [n for n in ("nft", "dnsmasq", "ip") if shutil.which(n) is None]
    if as_json:
        typer.echo(json.dumps({
            "backends": {k: {"available": p is None, "problem": p} for k, p in backends.items()},
            "tools": {i.tool: {"backend": i.backend, "why": i.why, "problem": i.problem}
                      for i in isolation},
            "engines": {e.engine: {"client": e.client, "version": e.version,
                                   "rootless": e.rootless, "userns_remap": e.userns_remap,
                                   "problem": e.problem} for e in engines},
            "process_limit": f"pids cgroup ({cg[0]})" if cg else "RLIMIT_NPROC",
            "limits": lim.model_dump(),
            "egress": {"available": not missing, "missing": missing,
                       "rules": {n: r.model_dump() for n, r in config.security.egress.items()}},
        }, indent=2))
        return
    table = Table("backend", "status", "detail", title="sandbox backends", title_justify="left")
    for name, problem in backends.items():
        ok = problem is None
        table.add_row(name, "[green]available[/]" if ok else "[red]missing[/]",
                      escape(problem or ""))
    _out.print(table)
    for eng in engines:
        _out.print(f"container engine: {escape(eng.summary())}")
    for iso in isolation:
        state = f" [red]cannot run: {escape(iso.problem)}[/]" if iso.problem else ""
        _out.print(f"{iso.tool} runs in: [bold]{iso.backend}[/] ({escape(iso.why)}){state}")
    _out.print("process limit: " + (f"pids cgroup ({cg[0]})" if cg else
                                    "RLIMIT_NPROC only (not enforced for host root)"))
    _out.print(f"limits: wall {lim.wall_seconds}s, cpu {lim.cpu_seconds}s, memory "
               f"{lim.memory_mb} MB, processes {lim.max_processes}, files {lim.file_size_mb} MB,"
               f" output {lim.output_bytes} B")
    _out.print("egress control: " + ("available (nftables + dnsmasq)" if not missing else
                                     f"missing {', '.join(missing)} (apt-get install nftables "
                                     "dnsmasq iproute2)"))
    for name, rule in sorted(config.security.egress.items()):
        _out.print(f"  {name}: domains {rule.domains or '-'} cidrs {rule.cidrs or '-'} "
                   f"ports {rule.ports}")


@sandbox_app.command("run", context_settings={"allow_extra_args": True,
                                              "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    backend: Annotated[str | None, typer.Option(
        help=f"{', '.join(SANDBOX_BACKENDS)}, auto (default: security.tool_sandboxes.shell, "
        "else security.sandbox)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds before the run is killed")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="approve the call if it is risky")]
    = False,
) -> None:
    """Run a command the way the shell tool does: bastion sandbox run -- CMD ...

    It is a ``shell`` tool call through the gateway (policy, risk and approval, secrets,
    ``security.tool_sandboxes.shell``, ``security.egress.shell``, the audit log and its
    signer), made by the actor ``cli``.
    """
    import shlex

    from bastion.app import build_app
    from bastion.cli.approval import choose_approver
    from bastion.config.loader import load
    from bastion.mcp._nomodel import ToolsOnlyModel
    from bastion.memory.base import EphemeralMemory
    from bastion.messages import ToolCall

    argv = list(ctx.args)
    if not argv:
        raise SandboxError("no command given", fix="bastion sandbox run -- ls -la")
    if backend is not None and backend != "auto" and backend not in SANDBOX_BACKENDS:
        raise SandboxError(f"unknown sandbox backend {backend!r}",
                           fix=f"use --backend {', '.join(SANDBOX_BACKENDS)} or auto")
    config = load()
    if backend is not None:
        config.security.tool_sandboxes["shell"] = backend
    app = build_app(config, model=ToolsOnlyModel(), memory=EphemeralMemory(),
                    approver=choose_approver(yes=yes))
    arguments: dict[str, object] = {"command": shlex.join(argv)}
    if timeout is not None:
        arguments["timeout_s"] = timeout

    async def call() -> ToolResult:
        try:
            return await app.gateway.execute(ToolCall("shell", arguments), actor="cli")
        finally:
            await app.aclose()

    res = asyncio.run(call())
    data = res.data if isinstance(res.data, dict) else None
    if data is None:  # refused (policy, approval, no sandbox) or failed before it ran
        raise SandboxError(res.error or res.text, fix=None if "(fix: " in res.text else
                           "bastion sandbox status says what each tool runs in; "
                           "bastion audit tools -n 1 shows the decision")
    typer.echo(data["stdout"], nl=False)
    if data["stderr"]:
        typer.echo(data["stderr"], nl=False, err=True)
    if data["killed_reason"]:
        _err.print(f"[red]killed: {escape(str(data['killed_reason']))}[/]")
    code = int(data["exit_code"])
    raise typer.Exit(code if 0 <= code < 256 else 137)


@sandbox_app.command("ls")
def ls(as_json: JsonOpt = False) -> None:
    """List the sandboxed runs that are alive now (from any bastion process)."""
    from bastion.security.sandbox._running import runs

    live = runs()
    if as_json:
        typer.echo(json.dumps(live, indent=2))
        return
    if not live:
        _err.print("no sandboxed runs are alive")
        return
    table = Table("id", "backend", "pid", "age", "command")
    now = time.time()
    for rec in live:
        table.add_row(rec["id"], rec.get("backend", "?"), str(rec["pid"]),
                      f"{now - rec['started']:.1f}s", escape(rec.get("command", "")))
    _out.print(table)


@sandbox_app.command("kill")
def kill(run_id: Annotated[str, typer.Argument(help="id from 'bastion sandbox ls'")]) -> None:
    """Kill one sandboxed run and every process in it."""
    from bastion.security.sandbox._running import kill as kill_run

    if not kill_run(run_id):
        raise SandboxError(f"no live sandboxed run {run_id!r}", fix="see 'bastion sandbox ls'")
    _err.print(f"killed {run_id}")


@sandbox_app.command("build-image")
def build_image(
    force: Annotated[bool, typer.Option("--force", help="rebuild even if it exists")] = False,
    mirror: Annotated[str, typer.Option(help="Debian mirror")] = "http://deb.debian.org/debian",
    engine: Annotated[str, typer.Option(help="podman or docker")] = "podman",
) -> None:
    """Build the container sandbox image locally (debootstrap + import; ~2 min, cached).

    For docker, an image podman already has is copied (podman save | docker load) instead.
    """
    import tempfile
    from pathlib import Path

    from bastion.security.sandbox.container import (
        IMAGE,
        ContainerSandbox,
        copy_image,
        image_exists,
    )
    from bastion.security.sandbox.container import build_image as build
    from bastion.security.sandbox.factory import CONTAINER_ENGINES, backend_class

    if engine not in CONTAINER_ENGINES:
        raise SandboxError(f"unknown container engine {engine!r}",
                           fix="use --engine podman or --engine docker")
    cls = backend_class(engine)
    assert issubclass(cls, ContainerSandbox)
    exe = cls.find_cli()
    if exe is None:
        raise SandboxError(f"{engine} is not installed", fix=cls.install_hint)
    cli = [exe, *cls.client_args()]
    if not force and image_exists(cli):
        _err.print(f"{IMAGE} already exists in {engine} (use --force to rebuild)")
        return
    if engine == "docker" and not force and image_exists("podman"):
        _err.print(f"copying {IMAGE} from podman to docker ...")
        copy_image(["podman"], cli)
    else:
        with tempfile.TemporaryDirectory(prefix="bastion-image-") as tmp:
            _err.print(f"building {IMAGE} for {engine} with debootstrap from {mirror} ...")
            build(Path(tmp), cli=cli, mirror=mirror, install_hint=cls.install_hint)
    _err.print(f"built {IMAGE} for {engine}")


def register(app: typer.Typer) -> None:
    """Add ``bastion sandbox`` to the CLI."""
    app.add_typer(sandbox_app, name="sandbox")

"""``bastion cluster status|add|remove|drain|resume|metrics`` and ``bastion node serve``.

Cluster commands talk to the running ``bastion serve`` (``api.host``/``api.port`` with the
API token), where the live router is. Without a running server, ``status`` and ``metrics``
check the configured nodes from this process, and ``add``/``remove`` edit ``cluster.nodes``
in the config file (what the server loads on its next start).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from bastion.cli._console import out_console
from bastion.cli._options import JsonOpt
from bastion.cli._options import load_config as _config
from bastion.config.model import Config
from bastion.errors import ClusterError, ConfigError, NotFoundError

if TYPE_CHECKING:
    from bastion.client import BastionClient

cluster_app = typer.Typer(help="Inspect and manage the model cluster.", no_args_is_help=True)
node_app = typer.Typer(help="Run this machine as a cluster node.", no_args_is_help=True)



# ---- talking to the running server -----------------------------------------------------
class _NoServer(Exception):
    pass


class _NoClusterServer(_NoServer):
    """A server runs, but it does not route a cluster (its model.backend is another)."""


T = TypeVar("T")


def _api(cfg: Config, call: Callable[[BastionClient], T]) -> T:
    """Run ``call`` with the running server's client (``bastion.client``).

    Raises :class:`_NoServer` when none answers and :class:`_NoClusterServer` when it
    routes no cluster; its other errors are the server's one line with a fix.
    """
    from bastion.client import BastionClient, ServerRefused, ServerUnreachable

    try:
        with BastionClient.from_config(cfg, timeout=10.0) as client:
            return call(client)
    except ServerUnreachable as exc:
        raise _NoServer() from exc
    except ServerRefused as exc:
        if exc.code == "no_cluster":
            raise _NoClusterServer() from exc
        raise


async def _local_status(cfg: Config, *, metrics: bool = False) -> dict[str, Any] | str:
    from bastion.cluster.factory import create_cluster_model

    cluster = create_cluster_model(cfg)
    try:
        if cfg.cluster.discovery.enabled:
            await cluster.check_now()  # the discovery round first finds nodes
        await cluster.check_now()
        return cluster.metrics.render() if metrics else cluster.status()
    finally:
        await cluster.aclose()


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "any"
    return str(value)


def _print_status(status: dict[str, Any], source: str, discovery: bool = False) -> None:
    console = out_console()
    nodes = status.get("nodes") or []
    console.print(
        f"cluster model [bold]{status.get('model')}[/], tier {status.get('tier')} ({source})"
    )
    if not nodes:
        console.print("no nodes; add one: bastion cluster add NAME URL")
        if discovery:
            console.print("mDNS discovery is on: announced nodes (bastion node serve) appear "
                          "within 10-25 s of the server's start; run this again then")
        return
    table = Table(
        "node",
        "engine",
        "tier",
        "models",
        "health",
        "breaker",
        "in-flight",
        "p50 latency",
        "tokens/s",
        "url",
    )
    for n in nodes:
        health = {True: "[green]ok[/]", False: "[red]down[/]", None: "?"}[n.get("healthy")]
        breaker = n["breaker"] + (" (draining)" if n.get("draining") else "")
        color = {"closed": "green", "half_open": "yellow", "open": "red"}.get(n["breaker"], "")
        p50 = n.get("p50_latency_s")
        table.add_row(
            n["name"], n["engine"], n["tier"], _fmt(n.get("models")), health,
            f"[{color}]{breaker}[/]", str(n.get("in_flight", 0)),
            f"{p50 * 1000:.0f} ms" if p50 is not None else "-",
            f"{n.get('tokens_per_s', 0):.1f}", n["url"],
        )  # fmt: skip
    console.print(table)


# ---- cluster commands ----------------------------------------------------------------------
@cluster_app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """Show nodes: engine, tier, models, health, breaker, in-flight, p50 latency, tokens/s."""
    cfg = _config()
    try:
        data: Any = _api(cfg, lambda c: c.cluster_status().model_dump(mode="json"))
        source = "live, from the running server"
    except _NoServer as exc:
        data = asyncio.run(_local_status(cfg))
        source = ("the running server routes no cluster" if isinstance(exc, _NoClusterServer)
                  else "no server running") + ": one health check from here"
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        _print_status(data, source, discovery=cfg.cluster.discovery.enabled)


@cluster_app.command("metrics")
def metrics() -> None:
    """Print the cluster's metrics in Prometheus text format (same as GET /metrics)."""
    cfg = _config()
    try:
        typer.echo(_api(cfg, lambda c: c.metrics()), nl=False)
    except _NoServer:
        typer.secho("no server running: metrics of one health check from here", err=True)
        typer.echo(asyncio.run(_local_status(cfg, metrics=True)), nl=False)


@cluster_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="unique node name")],
    url: Annotated[str, typer.Argument(help="server root, e.g. http://10.0.0.5:8080")],
    engine: Annotated[
        str, typer.Option(help="llama_cpp, vllm, ollama, openai or bastion")
    ] = "openai",
    tier: Annotated[str, typer.Option(help="small, medium or large")] = "small",
    model: Annotated[
        list[str] | None, typer.Option("--model", help="served model (repeat)")
    ] = None,
    max_context: Annotated[int, typer.Option(help="context window in tokens")] = 4096,
    token: Annotated[str | None, typer.Option(help="bearer token of the node")] = None,
    weight: Annotated[float, typer.Option(help="relative capacity")] = 1.0,
    save: Annotated[bool, typer.Option("--save", help="also write it to the config file")] = False,
) -> None:
    """Add a node to the running cluster (or to the config when no server runs)."""
    from pydantic import ValidationError

    from bastion.cluster.admin import NodeIn

    try:
        node = NodeIn.model_validate(
            {"name": name, "url": url, "engine": engine, "tier": tier, "models": model or [],
             "max_context": max_context, "token": token, "weight": weight}
        )  # fmt: skip
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            f"invalid {'.'.join(map(str, first['loc']))}: {first['msg']}",
            fix="see: bastion cluster add --help",
        ) from exc
    cfg = _config()
    try:
        _api(cfg, lambda c: c.add_node(node))
        typer.echo(f"added node {name} to the running cluster")
    except _NoClusterServer:
        save = True
        typer.echo(f"the running server does not route a cluster (model.backend: "
                   f"{cfg.model.backend}): saving to the config; to use it, run bastion config "
                   "set model.backend cluster and restart bastion serve")
    except _NoServer:
        save = True
        typer.echo("no server running: saving to the config (used on the next start)")
    if save:
        _save_nodes(
            lambda nodes: [
                *[n for n in nodes if n.get("name") != name],
                node.to_config().model_dump(mode="json") | {"token": token},
            ]
        )
        typer.echo(f"saved node {name} in the config file")


@cluster_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="node name")],
    save: Annotated[
        bool, typer.Option("--save", help="also remove it from the config file")
    ] = False,
) -> None:
    """Remove a node from the running cluster (or from the config when no server runs)."""
    cfg = _config()
    try:
        _api(cfg, lambda c: c.remove_node(name))
        typer.echo(f"removed node {name} from the running cluster")
    except _NoServer as exc:
        save = True
        if not any(n.name == name for n in cfg.cluster.nodes):
            raise NotFoundError(
                f"no node named {name} in the config", fix="list nodes: bastion cluster status"
            ) from exc
    if save:
        _save_nodes(lambda nodes: [n for n in nodes if n.get("name") != name])
        typer.echo(f"removed node {name} from the config file")


def _drain(name: str, on: bool) -> None:
    cfg = _config()
    try:
        _api(cfg, lambda c: c.drain_node(name, on))
    except _NoClusterServer as exc:
        raise ClusterError("the running server does not route a cluster",
                           fix="bastion config set model.backend cluster, then restart "
                           "bastion serve") from exc
    except _NoServer as exc:
        raise ClusterError(
            "draining needs the running server", fix="start it: bastion serve"
        ) from exc


@cluster_app.command("drain")
def drain(name: Annotated[str, typer.Argument(help="node name")]) -> None:
    """Stop sending new requests to a node; requests in flight finish."""
    _drain(name, True)
    typer.echo(f"node {name} is draining: no new requests")


@cluster_app.command("resume")
def resume(name: Annotated[str, typer.Argument(help="node name")]) -> None:
    """Send requests to a drained node again."""
    _drain(name, False)
    typer.echo(f"node {name} takes requests again")


def _save_nodes(change: Any) -> None:
    from bastion.config import paths
    from bastion.config.loader import read_raw, save, validate

    path = paths.config_file()
    raw = read_raw(path)
    cluster = raw.setdefault("cluster", {})
    cluster["nodes"] = [n for n in change(list(cluster.get("nodes") or [])) if n is not None]
    for n in cluster["nodes"]:
        if n.get("token") is None:
            n.pop("token", None)
    save(validate(raw, str(path)), path)


# ---- node serve ----------------------------------------------------------------------------
@node_app.command("serve")
def node_serve(
    model: Annotated[
        Path | None, typer.Option(help="GGUF file (default: model.path or the shipped model)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="node name (default: the host name)")] = None,
    host: Annotated[str, typer.Option(
        help="address to bind; anything but loopback needs an API key")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the model server")] = 8080,
    tier: Annotated[str, typer.Option(help="small, medium or large")] = "small",
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="context window")] = 2048,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all)")] = None,
    advertise: Annotated[
        list[str] | None, typer.Option(help="address to announce (repeat)")
    ] = None,
    ttl: Annotated[int, typer.Option(help="mDNS record TTL in seconds")] = 30,
    announce: Annotated[
        bool, typer.Option("--announce/--no-announce", help="announce over mDNS")
    ] = True,
    api_key_file: Annotated[Path | None, typer.Option(
        "--api-key-file",
        help="file holding the bearer token clients must send (or set BASTION_NODE_API_KEY)",
    )] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="serve https with this certificate")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="private key of --tls-cert")] = None,
    alias: Annotated[str | None, typer.Option(help="model name announced and served")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="show llama.cpp's load and per-request debug output")] = False,
) -> None:
    """Serve a model on this machine (llama.cpp server) and announce it over mDNS.

    It binds 127.0.0.1 by default. To serve other machines, bind their network and give a
    key (never on the command line: other users see it in ps): BASTION_NODE_API_KEY or
    --api-key-file.
    """
    import socket

    from bastion._net import is_loopback
    from bastion.cluster.serve import ServeOptions, check_exposure, serve

    cfg = _config()
    if tier not in ("small", "medium", "large"):
        raise ConfigError(f"unknown tier {tier}", fix="use --tier small, medium or large")
    path = model or cfg.model.path
    if path is None:
        from bastion.llm.embedded import shipped_model_path

        path = shipped_model_path()
    alias = alias or (Path(path).stem if model is not None else cfg.model.name)
    node_name = name or socket.gethostname().split(".")[0]
    opts = ServeOptions(
        model_path=Path(path).expanduser(), name=node_name, model_alias=alias, host=host,
        port=port, n_ctx=n_ctx, n_threads=threads, tier=tier, advertise=list(advertise or []),
        ttl_s=ttl, announce=announce, api_key=_node_key(api_key_file),
        tls_cert=tls_cert, tls_key=tls_key, service_type=cfg.cluster.discovery.service_type,
        verbose=verbose,
    )  # fmt: skip
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together", fix="pass both, or neither")
    check_exposure(opts)
    if not is_loopback(host):
        typer.secho(f"warning: node serve listens on {host}: other machines can use the model "
                    "with the API key" + ("" if opts.tls_cert else "; without --tls-cert it and "
                                          "the prompts travel in clear"), err=True, fg="yellow")
    raise typer.Exit(asyncio.run(serve(opts)))


def _node_key(path: Path | None) -> str | None:
    """Return the node's API key from --api-key-file or BASTION_NODE_API_KEY (never argv)."""
    import os

    if path is None:
        return os.environ.get("BASTION_NODE_API_KEY") or None
    try:
        if path.expanduser().stat().st_mode & 0o077:
            raise ConfigError(f"--api-key-file {path} can be read by other users",
                              fix=f"chmod 600 {path}")
        key = path.expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read --api-key-file {path}: {exc.strerror}",
                          fix="point it at a readable file holding the key") from exc
    if not key:
        raise ConfigError(f"--api-key-file {path} is empty", fix="write the key into it")
    return key


def register(app: typer.Typer) -> None:
    """Add ``cluster`` and ``node`` to the ``bastion`` CLI."""
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(node_app, name="node")

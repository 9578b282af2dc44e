"""``bastion serve``: the REST API (OpenAI-compatible) on 127.0.0.1 with the token from ``init``."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from bastion._net import is_loopback as _is_loopback
from bastion.errors import ConfigError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")



def loopback_hosts(host: str) -> list[str] | None:
    """Return the ``Host`` names a loopback-bound API accepts (DNS rebinding), else ``None``.

    A page on a rebound name (``evil.example`` -> 127.0.0.1) sends its own name as ``Host``
    and is refused. IPv6 literals are not checked (Starlette's check cannot parse them).
    """
    if not _is_loopback(host) or ":" in host:
        return None
    return sorted({"127.0.0.1", "localhost", host})


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and return a listening TCP socket, or raise a one-line :class:`ConfigError`."""
    fix = "choose another port: bastion serve --port N (or bastion config set api.port N)"
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve API host {host!r}: {exc.strerror}",
                          fix="bastion serve --host 127.0.0.1") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                          fix=fix) from exc
    sock.set_inheritable(True)
    return sock


def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="address to bind (default: api.host, 127.0.0.1)")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65535, help="port (default: api.port; 0 = any free)"),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="server log level: " + ", ".join(LOG_LEVELS))
    ] = "warning",
) -> None:
    """Serve the REST API: OpenAI-compatible chat (model bastion-agent runs the agent), sessions."""
    import uvicorn

    from bastion.app import build_app
    from bastion.cli._console import model_notes
    from bastion.config.loader import load
    from bastion.config.tokens import serving_token
    from bastion.server.app import create_app

    if log_level not in LOG_LEVELS:
        raise typer.BadParameter(f"use one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    config = load()
    serving_token(config.api.token, "bastion serve")
    host = host or config.api.host
    port = config.api.port if port is None else port
    sock = bind_socket(host, port)
    try:
        app = build_app(config)
        api = create_app(app, close_app=True, allowed_hosts=loopback_hosts(host))
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"bastion API on http://{shown}:{bound}  (OpenAI base URL: "
                   f"http://{shown}:{bound}/v1; token: bastion config get api.token --reveal)")
        model_notes(app.model)
        if not _is_loopback(host):
            typer.secho(f"warning: listening on {host}, reachable from other machines; "
                        "anyone with the token can run the agent", err=True, fg="yellow")
        server = uvicorn.Server(uvicorn.Config(
            api, log_level=log_level, access_log=log_level in ("info", "debug"),
            timeout_graceful_shutdown=5, server_header=False,
        ))
        server.run(sockets=[sock])
    finally:
        sock.close()


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.command("serve")(serve)

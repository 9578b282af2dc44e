"""``bastion secrets set|get|list|rm|recipient``: manage secrets.

Values are never echoed unless asked (``get --reveal``), and ``set`` reads the value from a
hidden prompt or stdin, never from argv.
"""

from __future__ import annotations

import getpass
import json
import shlex
import sys
from typing import Annotated

import typer

from bastion.cli._prompt import confirm
from bastion.errors import SecretError
from bastion.security.secrets.base import SecretBackend

secrets_app = typer.Typer(help="Store and inspect secrets (sops+age file, OpenBao/Vault, env).",
                          no_args_is_help=True)

BackendOpt = Annotated[str | None, typer.Option(
    "--backend", "-b", help="sops, vault or env (default: secrets.default_backend)")]
KeyOpt = Annotated[str, typer.Option("--key", "-k", help="key inside the secret")]


def _backend(name: str | None) -> SecretBackend:
    from bastion.config.loader import load
    from bastion.security.secrets.factory import build_backends

    cfg = load()
    backends = build_backends(cfg)
    chosen = name or cfg.secrets.default_backend
    if chosen not in backends:
        raise SecretError(f"the {chosen!r} backend is not configured",
                          fix="configure secrets.vault in bastion.yaml, or use --backend sops")
    return backends[chosen]


def _read_value(key: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"value for {key} (hidden): ")
        again = getpass.getpass("again: ")
        if value != again:
            raise SecretError("the two values differ", fix="run the command again")
    else:
        value = sys.stdin.read()
        if value.endswith("\n"):
            value = value[:-1]
    if not value:
        raise SecretError("empty secret value", fix="type the value, or pipe it on stdin")
    return value


@secrets_app.command("set")
def set_cmd(
    path: Annotated[str, typer.Argument(help="secret path, e.g. github or db/prod")],
    key: KeyOpt = "value",
    backend: BackendOpt = None,
) -> None:
    """Store a value (read from a hidden prompt, or from stdin when piped)."""
    b = _backend(backend)
    value = _read_value(key)
    try:
        data = b.get(path)
    except SecretError:
        data = {}
    data[key] = value
    b.put(path, data)
    b.close()
    typer.echo(f"stored secret://{b.name}/{path}#{key} ({len(value)} characters)")


@secrets_app.command("get")
def get_cmd(
    path: Annotated[str, typer.Argument(help="secret path")],
    key: Annotated[str | None, typer.Option("--key", "-k", help="only this key")] = None,
    backend: BackendOpt = None,
    reveal: Annotated[bool, typer.Option("--reveal", help="print the value itself")] = False,
) -> None:
    """Show a secret's keys (values masked unless --reveal)."""
    b = _backend(backend)
    data = b.get(path)
    if key is not None:
        if key not in data:
            raise SecretError(f"secret {path} has no key {key!r}",
                              fix=f"keys: {', '.join(sorted(data))}")
        data = {key: data[key]}
    for k, v in data.items():
        if reveal:
            typer.echo(v if key is not None else f"{k}={v}")
        else:
            typer.echo(f"secret://{b.name}/{path}#{k}: {'*' * 8} ({len(v)} characters)")


@secrets_app.command("list")
def list_cmd(
    prefix: Annotated[str, typer.Argument(help="only paths starting with this")] = "",
    backend: BackendOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List secret paths (never values)."""
    b = _backend(backend)
    paths = b.list(prefix)
    if as_json:
        typer.echo(json.dumps(paths))
    elif not paths:
        typer.echo("no secrets yet; add one with: bastion secrets set NAME")
    else:
        reference = getattr(b, "reference", None)  # sops lists values: path#key
        for p in paths:
            typer.echo(f"secret://{b.name}/{reference(p) if reference else p}")


@secrets_app.command("rm")
def rm_cmd(
    path: Annotated[str, typer.Argument(help="secret path")],
    backend: BackendOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Delete a secret."""
    b = _backend(backend)
    if not confirm(f"delete secret {path}?", yes=yes,
                   fix=f"bastion secrets rm {shlex.quote(path)} --yes"):
        raise typer.Exit(1)
    b.delete(path)
    typer.echo(f"deleted secret://{b.name}/{path}")


@secrets_app.command("recipient")
def recipient_cmd() -> None:
    """Print bastion's age recipient (add it to other sops files so bastion can read them)."""
    from bastion.security.secrets.sops import SopsBackend

    b = _backend("sops")
    assert isinstance(b, SopsBackend)
    typer.echo(b.recipients()[0])


def register(app: typer.Typer) -> None:
    """Add ``bastion secrets ...``, with ``rotate`` and ``retire`` (``cli/crypto.py``)."""
    from bastion.cli.crypto import retire_cmd, rotate_cmd

    secrets_app.command("rotate")(rotate_cmd)
    secrets_app.command("retire")(retire_cmd)
    app.add_typer(secrets_app, name="secrets")

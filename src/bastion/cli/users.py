"""``bastion users add|list|disable|rm|roles`` and ``bastion keys create|list|revoke|rotate``.

Users and keys live in ``HOME/users.db`` (0600); keys are stored hashed and shown once. A
running ``bastion serve`` sees every change on its next request (no restart).
"""

from __future__ import annotations

import json
import time
from contextlib import closing
from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import out_console
from bastion.cli._options import JsonOpt
from bastion.errors import ConfigError
from bastion.security.identity import ROLES, SCOPES, Quota
from bastion.security.keystore import KeyStore, open_store
from bastion.security.quota import check_limit

console = out_console()
users_app = typer.Typer(help="People and programs that use this bastion server.",
                        no_args_is_help=True)
keys_app = typer.Typer(help="API keys: scoped, expiring, shown once, stored hashed.",
                       no_args_is_help=True)

RoleOpt = Annotated[list[str] | None, typer.Option(
    "--role", "-r", help=f"role, repeatable: {', '.join(ROLES)}")]
RequestsOpt = Annotated[str | None, typer.Option(
    "--requests", help="request limit, e.g. 60/minute")]
TokensOpt = Annotated[str | None, typer.Option(
    "--tokens", help="model token limit, e.g. 100000/day")]
ToolCallsOpt = Annotated[str | None, typer.Option(
    "--tool-calls", help="tool call limit, e.g. 500/day")]
ConcurrentOpt = Annotated[int | None, typer.Option(
    "--concurrent", min=1, help="agent turns at once")]


def _quota(requests: str | None, tokens: str | None, tool_calls: str | None,
           concurrent: int | None) -> Quota:
    return Quota(check_limit("requests", requests), check_limit("tokens", tokens),
                 check_limit("tool calls", tool_calls), concurrent)
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def _store() -> closing[KeyStore]:
    """Open the store for one command; closed when the ``with`` block ends."""
    return closing(open_store())


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def parse_expiry(text: str | None, *, now: float | None = None) -> float | None:
    """Return the expiry time ``--expires`` names: ``30d``, ``12h``, ``2w`` or an ISO date."""
    if not text:
        return None
    now = time.time() if now is None else now
    text = text.strip()
    if text[-1:] in _UNITS and text[:-1].isdigit() and int(text[:-1]) > 0:
        return now + int(text[:-1]) * _UNITS[text[-1]]
    try:
        ts = datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise ConfigError(f"cannot read the expiry {text!r}",
                          fix="use a duration like 30d, 12h, 2w or a date like 2027-01-31"
                          ) from exc
    if ts <= now:
        raise ConfigError(f"the expiry {text} is in the past", fix="use a later date, or 30d")
    return ts


@users_app.command("add")
def add_cmd(name: str, role: RoleOpt = None) -> None:
    """Create a user (default role: user)."""
    with _store() as s:
        info = s.add_user(name, role or ["user"])
    typer.echo(f"user {info.name} added (roles: {', '.join(info.roles)}); "
               f"give them a key: bastion keys create --user {info.name}")


@users_app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """List users with their roles and number of active keys."""
    with _store() as s:
        users = s.users()
    if as_json:
        typer.echo(json.dumps([u.to_dict() for u in users], indent=2))
        return
    table = Table("user", "roles", "state", "keys", "created")
    for u in users:
        table.add_row(escape(u.name), ", ".join(u.roles), "disabled" if u.disabled else "active",
                      str(u.keys), _when(u.created_at))
    console.print(table)


@users_app.command("disable")
def disable_cmd(name: str, enable: Annotated[bool, typer.Option(
        "--enable", help="enable the user again")] = False) -> None:
    """Disable a user: none of their keys works from the next request on."""
    with _store() as s:
        info = s.set_disabled(name, not enable)
    typer.echo(f"user {info.name} {'disabled' if info.disabled else 'enabled'}")


@users_app.command("rm")
def rm_cmd(name: str) -> None:
    """Remove a user and their keys (their sessions stay, owned by nobody who can log in)."""
    with _store() as s:
        info = s.remove_user(name)
    typer.echo(f"user {info.name} removed with {info.keys} active key(s)")


@users_app.command("roles")
def roles_cmd(name: str, role: RoleOpt = None) -> None:
    """Show a user's roles, or replace them with the ``--role`` options given."""
    with _store() as s:
        info = s.set_roles(name, role) if role else s.user(name)
    typer.echo(f"{info.name}: {', '.join(info.roles)}")


@users_app.command("limits")
def limits_cmd(name: str, requests: RequestsOpt = None, tokens: TokensOpt = None,
               tool_calls: ToolCallsOpt = None, concurrent: ConcurrentOpt = None,
               clear: Annotated[bool, typer.Option("--clear", help="remove every limit")]
               = False) -> None:
    """Show a user's quota, or set it (all their keys together count against it)."""
    quota = _quota(requests, tokens, tool_calls, concurrent)
    with _store() as s:
        if quota or clear:
            s.set_quota(name, quota)
        now = s.quota(name)
    text = ", ".join(f"{k}={v}" for k, v in now.to_dict().items()) or "no limits"
    typer.echo(f"{name}: {text}")


@keys_app.command("create")
def create_cmd(
    user: Annotated[str, typer.Option("--user", "-u", help="whose key")],
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", "-s", help=f"repeatable: {', '.join(SCOPES)}, tools:<glob>")] = None,
    expires: Annotated[str | None, typer.Option(
        "--expires", help="30d, 12h, 2w or a date (default: never)")] = None,
    name: Annotated[str, typer.Option("--name", help="a label for lists")] = "",
    requests: RequestsOpt = None, tokens: TokensOpt = None, tool_calls: ToolCallsOpt = None,
    concurrent: ConcurrentOpt = None,
) -> None:
    """Create an API key; it is printed once, on stdout, and stored only hashed."""
    quota = _quota(requests, tokens, tool_calls, concurrent)
    with _store() as s:
        token, info = s.create_key(user, scopes=scope or ["chat"], name=name,
                                   expires_at=parse_expiry(expires), quota=quota)
    typer.echo(token)
    typer.echo(f"key {info.id} for {info.user} (scopes: {', '.join(info.scopes)}; expires: "
               f"{_when(info.expires_at) if info.expires_at else 'never'}); shown once, "
               "store it now", err=True)


@keys_app.command("list")
def keys_list_cmd(user: Annotated[str | None, typer.Option("--user", "-u")] = None,
                  as_json: JsonOpt = False) -> None:
    """List keys (never their secrets) with scopes, expiry and last use."""
    with _store() as s:
        keys = s.keys(user)
    if as_json:
        typer.echo(json.dumps([k.to_dict() | {"state": k.state()} for k in keys], indent=2))
        return
    table = Table("id", "user", "name", "scopes", "quota", "state", "expires", "last used")
    for k in keys:
        quota = " ".join(f"{n}={v}" for n, v in k.quota.to_dict().items())
        table.add_row(k.id, escape(k.user), escape(k.name), escape(" ".join(k.scopes)),
                      escape(quota or "-"), k.state(), _when(k.expires_at), _when(k.last_used))
    console.print(table)


@keys_app.command("revoke")
def revoke_cmd(key_id: str) -> None:
    """Revoke a key: refused from the next request on, no restart needed."""
    with _store() as s:
        info = s.revoke(key_id)
    typer.echo(f"key {info.id} of {info.user} revoked")


@keys_app.command("rotate")
def rotate_cmd(key_id: str) -> None:
    """Replace a key by a new one (same user, scopes, expiry); the old one stops working."""
    with _store() as s:
        token, info = s.rotate(key_id)
    typer.echo(token)
    typer.echo(f"key {key_id} revoked; new key {info.id} for {info.user}; shown once",
               err=True)


def register(app: typer.Typer) -> None:
    """Add ``bastion users`` and ``bastion keys`` to the CLI."""
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")

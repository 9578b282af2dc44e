"""``bastion users`` and ``bastion keys`` through the Typer app, on a real users.db."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bastion.cli import main as cli_main
from bastion.errors import BastionError
from bastion.security.keystore import open_store


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    if not any(g.name == "users" for g in cli_main.app.registered_groups):
        cli_main._load_commands()
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli_main.app, list(args))

    return invoke


def test_init_makes_the_token_the_admins_key(cli, bastion_home: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("init", "--yes").exit_code == 0
    token = yaml.safe_load((bastion_home / "bastion.yaml").read_text())["api"]["token"]
    users = json.loads(cli("users", "list", "--json").stdout)
    assert [(u["name"], u["roles"]) for u in users] == [("admin", ["admin", "user", "approver"])]
    store = open_store()
    try:
        assert store.authenticate(token).is_admin
    finally:
        store.close()


def test_users_and_keys_round_trip(cli, bastion_home: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("users", "add", "dana", "--role", "user", "--role", "approver").exit_code == 0
    assert "dana: user, approver" in cli("users", "roles", "dana").stdout
    assert "dana: approver" in cli("users", "roles", "dana", "--role", "approver").stdout
    made = cli("keys", "create", "--user", "dana", "--scope", "chat", "--scope",
               "approvals", "--expires", "30d", "--name", "phone", "--requests", "60/minute",
               "--concurrent", "2")
    assert made.exit_code == 0
    key = made.stdout.strip().splitlines()[0]
    assert key.startswith("bst_") and "shown once" in made.stderr
    listed = json.loads(cli("keys", "list", "--user", "dana", "--json").stdout)
    assert [(k["name"], k["scopes"], k["state"], k["quota"]) for k in listed] == [
        ("phone", ["chat", "approvals"], "active", {"requests": "60/minute", "concurrent": 2})]
    assert key not in cli("keys", "list").stdout  # never shown again
    rotated = cli("keys", "rotate", listed[0]["id"])
    new = rotated.stdout.strip()
    assert new.startswith("bst_") and new != key
    states = {k["id"]: k["state"] for k in
              json.loads(cli("keys", "list", "--json").stdout)}
    assert states[listed[0]["id"]] == "revoked" and list(states.values()).count("active") == 1
    rotated_info = next(k for k in json.loads(cli("keys", "list", "--json").stdout)
                        if k["state"] == "active")
    assert rotated_info["quota"] == {"requests": "60/minute", "concurrent": 2}  # kept
    assert cli("users", "disable", "dana").stdout.strip() == "user dana disabled"
    assert "removed" in cli("users", "rm", "dana").stdout


def test_mistakes_are_one_line_errors(cli, bastion_home: Path) -> None:  # type: ignore[no-untyped-def]
    for args, words in [(("keys", "create", "--user", "nobody"), "no user named"),
                        (("keys", "revoke", "000000000000"), "no key with id"),
                        (("users", "add", "eve", "--role", "root"), "unknown role"),
                        (("keys", "create", "--user", "admin", "--expires", "soon"),
                         "cannot read the expiry")]:
        exc = cli(*args).exception
        assert isinstance(exc, BastionError) and words in exc.message and exc.fix, args

"""``bastion task ...`` through the Typer app on a real tasks.db (live: test_tasks_live)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import main as cli_main
from bastion.errors import BastionError
from bastion.tasks.store import open_store


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    if not any(g.name == "task" for g in cli_main.app.registered_groups):
        cli_main._load_commands()
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli_main.app, list(args))

    return invoke


def test_add_list_show_pause_resume_rm(cli, bastion_home: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("task", "add", "digest", "--cron", "0 7 * * *", "--tz", "Europe/Paris",
            "summarise what changed in my notes", "--tools", "read_file,list_*",
            "--max-steps", "4", "--max-tokens", "4000", "--budget", "10m",
            "--notify", "mailto:me@example.com", "--auto-approve", "read_file:low")
    assert r.exit_code == 0, r.output
    assert "task digest added (cron 0 7 * * *); next run" in r.stdout
    listed = json.loads(cli("task", "list", "--json").stdout)
    assert [(t["name"], t["owner"], t["tz"]) for t in listed] == [
        ("digest", "admin", "Europe/Paris")]
    shown = json.loads(cli("task", "show", "digest", "--json").stdout)
    assert shown["policy"]["tools"] == ["read_file", "list_*"]
    assert shown["policy"]["wall_clock_s"] == 600.0 and shown["missed"] == "run_once"
    assert shown["next_fire"] is not None and len(shown["policy_hash"]) == 64
    assert cli("task", "pause", "digest").exit_code == 0
    assert json.loads(cli("task", "show", "digest", "--json").stdout)["next_fire"] is None
    assert "next run" in cli("task", "resume", "digest").stdout
    assert cli("task", "rm", "digest").exit_code == 0
    assert json.loads(cli("task", "list", "--json").stdout) == []


def test_webhook_secret_printed_once_and_rotated(cli, bastion_home: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("task", "add", "triage", "--webhook", "triage the alert", "--user", "alice")
    assert isinstance(r.exception, BastionError) and "no user named" in r.exception.message
    assert cli("users", "add", "alice").exit_code == 0
    r = cli("task", "add", "triage", "--webhook", "triage the alert", "--user", "alice")
    assert r.exit_code == 0
    secret = r.stdout.strip()
    assert secret.startswith("whsec_") and "shown once" in r.stderr
    assert secret not in cli("task", "show", "triage", "--user", "alice", "--json").stdout
    new = cli("task", "secret", "triage", "--user", "alice", "--rotate").stdout.strip()
    assert new.startswith("whsec_") and new != secret
    assert cli("task", "list", "--json").stdout.strip() == "[]"  # admin's own: none
    assert len(json.loads(cli("task", "list", "--all", "--json").stdout)) == 1


def test_run_now_queues_a_fire_for_the_server(cli, bastion_home: Path,  # type: ignore[no-untyped-def]
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bastion.cli.tasks.WAIT_S", 0.2)  # no server runs here
    assert cli("task", "add", "adhoc", "check the inbox").exit_code == 0  # manual only
    r = cli("task", "run-now", "adhoc")
    assert r.exit_code == 0 and "queued" in r.stderr
    store = open_store()
    try:
        [fire] = store.queued()
        assert fire.trigger.kind == "manual" and fire.trigger.detail == "bastion task run-now"
    finally:
        store.close()


@pytest.mark.parametrize(("args", "needle"), [
    (("x", "--cron", "61 * * * *", "p"), "cannot read the cron line"),
    (("x", "--every", "5s", "p"), "too often"),
    (("x", "--every", "1m", "--cron", "* * * * *", "p"), "give one of"),
    (("x", "--at", "2001-01-01T00:00", "p"), "in the past"),
    (("x", "--watch", "../../etc", "p"), "outside the workspace"),
    (("x", "--tz", "Mars/Base", "--cron", "0 7 * * *", "p"), "unknown time zone"),
    (("x", "--auto-approve", "shell:critical", "p"), "CRITICAL is not allowed"),
    (("x", "--notify", "ftp://x", "p"), "cannot read the notify target"),
    (("x", "--budget", "soon", "p"), "cannot read the budget"),
    (("bad name", "p"), "bad task name"),
])
def test_bad_input_is_one_line_with_a_fix(cli, args: tuple[str, ...], needle: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("task", "add", *args)
    assert r.exit_code != 0
    assert isinstance(r.exception, BastionError), r.output
    assert needle in r.exception.message and r.exception.fix


def test_unknown_and_duplicate_tasks(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("task", "show", "nothing")
    assert isinstance(r.exception, BastionError) and "no task named" in r.exception.message
    assert cli("task", "add", "dup", "p").exit_code == 0
    r = cli("task", "add", "dup", "p")
    assert isinstance(r.exception, BastionError) and "already has" in r.exception.message

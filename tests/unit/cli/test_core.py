"""init, config, ask and doctor through the Typer app, with a scripted model where one is needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import bastion.app as app_mod
from bastion.cli import main as cli_main
from bastion.errors import BastionError, ConfigError
from bastion.testing import Reply, ScriptedModel, call, say

_loaded = False


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    global _loaded
    if not _loaded:
        cli_main._load_commands()
        _loaded = True
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli_main.app, list(args))

    return invoke


@pytest.fixture
def configured(cli, bastion_home: Path) -> Path:  # type: ignore[no-untyped-def]
    assert cli("init", "--yes").exit_code == 0
    path = bastion_home / "bastion.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["memory"] = {"enabled": False}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def use_model(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    real = app_mod.build_app

    def install(*replies: Reply) -> ScriptedModel:
        model = ScriptedModel(*replies)

        def build(config=None, **kw):  # type: ignore[no-untyped-def]
            kw["model"] = model
            return real(config, **kw)

        monkeypatch.setattr(app_mod, "build_app", build)
        return model

    return install


# -- init ----------------------------------------------------------------------------------------
def test_init_writes_config_with_token_and_hardware(cli, bastion_home: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("init", "--yes")
    assert result.exit_code == 0, result.output
    raw = yaml.safe_load((bastion_home / "bastion.yaml").read_text())
    assert len(raw["api"]["token"]) >= 32
    assert raw["hardware"]["cores"] >= 1 and raw["hardware"]["ram_gb"] > 0
    assert raw["hardware"]["recommended_quant"]
    assert raw["model"]["n_threads"] == raw["hardware"]["cores"]
    assert (bastion_home / "bastion.yaml").stat().st_mode & 0o077 == 0  # secrets: owner only
    assert "recommended" in result.stderr


def test_init_keeps_existing_config_unless_forced(cli, bastion_home: Path) -> None:  # type: ignore[no-untyped-def]
    cli("init", "--yes")
    path = bastion_home / "bastion.yaml"
    token = yaml.safe_load(path.read_text())["api"]["token"]
    again = cli("init", "--yes")
    assert again.exit_code == 0 and "kept" in again.stderr
    assert yaml.safe_load(path.read_text())["api"]["token"] == token
    assert cli("init", "--yes", "--force").exit_code == 0  # clients keep their token (#16)
    assert yaml.safe_load(path.read_text())["api"]["token"] == token
    assert cli("init", "--yes", "--force", "--rotate-token").exit_code == 0
    assert yaml.safe_load(path.read_text())["api"]["token"] != token


def test_init_refuses_to_keep_a_broken_config(cli, bastion_home: Path) -> None:  # type: ignore[no-untyped-def]
    (bastion_home / "bastion.yaml").write_text("model: [unclosed\n")
    result = cli("init", "--yes")
    assert isinstance(result.exception, ConfigError)
    assert "bastion init" in (result.exception.fix or "")


# -- config --------------------------------------------------------------------------------------
def test_config_show_masks_secrets_unless_revealed(cli, configured: Path) -> None:  # type: ignore[no-untyped-def]
    token = yaml.safe_load(configured.read_text())["api"]["token"]
    shown = cli("config", "show")
    assert shown.exit_code == 0 and token not in shown.stdout and "********" in shown.stdout
    assert token in cli("config", "show", "--reveal").stdout
    assert cli("config", "get", "api.token").stdout.strip() == "********"
    assert cli("config", "get", "api.token", "--reveal").stdout.strip() == token


def test_config_get_and_set(cli, configured: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("config", "get", "model.backend").stdout.strip() == "embedded"
    assert cli("config", "set", "model.temperature", "0.5").exit_code == 0
    assert cli("config", "get", "model.temperature").stdout.strip() == "0.5"
    assert yaml.safe_load(configured.read_text())["model"]["temperature"] == 0.5
    section = cli("config", "get", "api")
    assert "port: 8765" in section.stdout and "********" in section.stdout


def test_config_set_rejects_bad_values_and_keeps_file(cli, configured: Path) -> None:  # type: ignore[no-untyped-def]
    before = configured.read_text()
    bad = cli("config", "set", "model.n_ctx", "lots")
    assert isinstance(bad.exception, ConfigError) and "model.n_ctx" in bad.exception.message
    unknown = cli("config", "set", "model.colour", "blue")
    assert isinstance(unknown.exception, ConfigError)
    assert isinstance(cli("config", "get", "nope.nothing").exception, ConfigError)
    assert configured.read_text() == before


# -- ask -----------------------------------------------------------------------------------------
def test_ask_prints_only_the_answer_on_stdout(cli, configured, use_model) -> None:  # type: ignore[no-untyped-def]
    model = use_model(call("list_files", path="."), say("There are no files yet."))
    result = cli("ask", "what files are there?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "There are no files yet.\n"
    assert "→ list_files" in result.stderr and "✓ list_files" in result.stderr
    assert model.seen[1].messages[-1].role == "tool"  # the tool result went back to the model


def test_ask_streams_when_asked(cli, configured, use_model) -> None:  # type: ignore[no-untyped-def]
    use_model(say("Hello there, friend."))
    result = cli("ask", "--stream", "hi")
    assert result.stdout == "Hello there, friend.\n"


def test_ask_json_transcript(cli, configured, use_model) -> None:  # type: ignore[no-untyped-def]
    use_model(call("list_files", path="."), say("Nothing here."))
    result = cli("ask", "--json", "--session", "work", "list them")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["answer"] == "Nothing here." and data["session"] == "work"
    (tc,) = data["tool_calls"]
    assert tc["name"] == "list_files" and tc["arguments"] == {"path": "."}
    assert tc["ok"] is True and tc["decision"] == "allowed"
    assert [e["type"] for e in data["events"]] == ["tool_call", "tool_result", "text", "done"]
    assert data["usage"]["completion_tokens"] > 0 and data["steps"] == 2


def test_ask_failure_exits_nonzero_with_json(cli, configured, use_model) -> None:  # type: ignore[no-untyped-def]
    use_model(Reply(fail=True), Reply(fail=True))
    result = cli("ask", "--json", "break please")
    assert result.exit_code == 1
    assert isinstance(result.exception, BastionError)
    data = json.loads(result.stdout)
    assert data["ok"] is False and "invalid tool JSON" in data["error"]


def test_ask_risky_tool_denied_without_a_human_and_allowed_with_yes(
    cli, configured: Path, use_model, bastion_home: Path  # type: ignore[no-untyped-def]
) -> None:
    assert cli("config", "set", "security.tools", "{write_file: ask}").exit_code == 0
    use_model(call("write_file", path="out.txt", content="hi"), say("Could not write."))
    denied = json.loads(cli("ask", "--json", "write it").stdout)
    assert denied["tool_calls"][0]["decision"] == "denied"
    assert not (bastion_home / "workspace" / "out.txt").exists()

    use_model(call("write_file", path="out.txt", content="hi"), say("Written."))
    allowed = json.loads(cli("ask", "--json", "--yes", "write it").stdout)
    assert allowed["tool_calls"][0]["decision"] == "allowed"
    assert (bastion_home / "workspace" / "out.txt").read_text() == "hi"


def test_ask_empty_question(cli, configured) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(cli("ask", "  ").exception, ConfigError)


# -- doctor --------------------------------------------------------------------------------------
def test_doctor_without_config_fails_with_fix(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("doctor")
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "bastion init" in result.stdout


def test_doctor_reports_missing_model_and_token(cli, configured: Path) -> None:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(configured.read_text())
    raw["model"]["path"] = "/nonexistent/model.gguf"
    raw["api"]["token"] = None
    configured.write_text(yaml.safe_dump(raw))
    result = cli("doctor")
    assert result.exit_code == 1
    out = result.stdout
    assert "model file not found: /nonexistent/model.gguf" in out
    assert "bastion config set model.path" in out
    assert "no API token" in out and "token_urlsafe" in out
    assert "data dir" in out and "disk" in out

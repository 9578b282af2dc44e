"""``bastion ask`` and friends as real processes: output streams, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.cli.conftest import bastion


def test_ask_uses_a_tool_and_keeps_the_session(served_home: Path,
                                               fake_server: FakeOpenAIServer) -> None:
    first = bastion(served_home, "ask", "--session", "demo", "please count files in sample")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("The tool said: sample")  # answer only on stdout
    assert "→ list_files" in first.stderr and "✓ list_files" in first.stderr
    second = bastion(served_home, "ask", "--json", "--session", "demo", "thanks")
    data = json.loads(second.stdout)
    assert data["ok"] and data["answer"] == "echo: thanks" and data["session"] == "demo"
    # the second process saw the first turn (session persisted by the memory layer)
    sent = [m.get("content") for m in fake_server.requests[-1]["messages"]]
    assert "please count files in sample" in sent
    doctor = bastion(served_home, "doctor")
    assert doctor.returncode == 0, doctor.stdout
    assert "model server" in doctor.stdout and "answered" in doctor.stdout


def test_user_mistakes_are_one_line_errors(served_home: Path) -> None:
    path = served_home / "bastion.yaml"
    good = path.read_text()
    path.write_text("model:\n  backend: [oops\n")
    broken = bastion(served_home, "ask", "hi")
    assert broken.returncode == 1
    assert broken.stderr.startswith("error: ") and "not valid YAML" in broken.stderr
    assert "(fix: " in broken.stderr and "Traceback" not in broken.stderr

    raw = yaml.safe_load(good)
    raw["model"].update(backend="embedded", name="gpt-17-ultra", base_url=None)
    path.write_text(yaml.safe_dump(raw))
    unknown = bastion(served_home, "ask", "hi")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "unknown embedded model 'gpt-17-ultra'" in unknown.stderr and "(fix: " in unknown.stderr

    bad_value = bastion(served_home, "config", "set", "api.port", "99999")
    assert bad_value.returncode == 1 and bad_value.stderr.count("\n") == 1
    assert "api.port" in bad_value.stderr


def test_unreachable_model_server_fails_the_ask(served_home: Path) -> None:
    path = served_home / "bastion.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["model"]["base_url"] = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    path.write_text(yaml.safe_dump(raw))
    result = bastion(served_home, "ask", "--json", "hi")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["ok"] is False
    doctor = bastion(served_home, "doctor")
    assert doctor.returncode == 1 and "unreachable" in doctor.stdout


@pytest.mark.real_model
def test_real_model_ask_calls_a_tool(bastion_home: Path) -> None:
    """The shipped model, embedded, answers a question that needs list_files."""
    assert bastion(bastion_home, "init", "--yes").returncode == 0
    path = bastion_home / "bastion.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["memory"] = {"enabled": False}
    path.write_text(yaml.safe_dump(raw))
    (bastion_home / "workspace" / "sample").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "c.txt"):
        (bastion_home / "workspace" / "sample" / name).write_text(name)
    result = bastion(bastion_home, "ask", "--json",
                     "List the files in the folder sample and count them.", timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["answer"].strip()
    assert any(tc["name"] == "list_files" and tc["ok"] for tc in data["tool_calls"])

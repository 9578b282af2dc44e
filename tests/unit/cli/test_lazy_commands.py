"""``bastion NAME ...`` imports only the modules that register NAME (main.COMMAND_OWNERS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bastion.cli import main

ROOT = Path(__file__).resolve().parents[3]

# Which modules register each top-level name (each module registers only its own groups:
# a fresh app per module shows exactly what it adds).
OWNERS = r"""
import importlib, json, typer
from bastion.cli import main
out = {}
for name in main.COMMAND_MODULES:
    app = typer.Typer()
    importlib.import_module(name).register(app)
    for c in app.registered_commands:
        out.setdefault(c.name or c.callback.__name__, []).append(name)
    for g in app.registered_groups:
        out.setdefault(g.name, []).append(name)
print(json.dumps(out))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_the_owner_table_names_the_modules_that_register_each_command() -> None:
    done = _python(OWNERS)
    assert done.returncode == 0, done.stderr
    actual: dict[str, list[str]] = json.loads(done.stdout)
    for name, owners in main.COMMAND_OWNERS.items():
        assert name in actual, f"COMMAND_OWNERS lists {name!r}, which no module registers"
        assert sorted(owners) == sorted(actual[name]), (name, actual[name])


def test_a_command_imports_only_its_modules() -> None:
    assert main._modules_for(["config", "get", "x"]) == ["bastion.cli.core"]
    assert main._modules_for(["audit", "prove"]) == ["bastion.cli.audit"]
    for args in ([], ["--help"], ["--version"], ["no-such-command"]):
        assert main._modules_for(args) == main.COMMAND_MODULES


def test_a_command_missing_from_the_subset_loads_everything() -> None:
    # a stale table (audit's commands moved to another module): found after loading the rest
    code = ("import sys; from bastion.cli import main; "
            "main.COMMAND_OWNERS['audit'] = ('bastion.cli.crypto',); "
            "sys.argv = ['bastion', 'audit', 'prove', '--help']; main.main()")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "Usage: bastion audit prove" in done.stdout
    wrong = _python(code.replace("'prove', '--help'", "'nosuch'"))
    assert wrong.returncode == 2
    assert wrong.stderr.strip().startswith("error: No such command 'nosuch'"), wrong.stderr

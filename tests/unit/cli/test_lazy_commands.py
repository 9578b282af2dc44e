"""``bastion NAME ...`` imports only the modules that register NAME (main.COMMAND_OWNERS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bastion.cli import main

ROOT = Path(__file__).resolve().parents[3]

# Every top-level name of the full CLI and the modules whose commands sit under it.
OWNERS = r"""
import json, typer
from bastion.cli import main
main._load_commands()
def walk(t, mods):
    for c in t.registered_commands:
        mods.add(c.callback.__module__)
    for g in t.registered_groups:
        walk(g.typer_instance, mods)
    return mods
out = {c.name or c.callback.__name__: sorted({c.callback.__module__})
       for c in main.app.registered_commands}
for g in main.app.registered_groups:
    out.setdefault(g.name, [])
    out[g.name] = sorted(walk(g.typer_instance, set(out[g.name])))
print(json.dumps(out))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_the_owner_table_names_every_module_under_each_command() -> None:
    done = _python(OWNERS)
    assert done.returncode == 0, done.stderr
    actual: dict[str, list[str]] = json.loads(done.stdout)
    for name, owners in main.COMMAND_OWNERS.items():
        assert name in actual, f"COMMAND_OWNERS lists {name!r}, which no module registers"
        under = {m for m in actual[name] if m in main.COMMAND_MODULES}
        assert under <= set(owners), f"bastion {name}: also registered by {under - set(owners)}"


def test_a_command_imports_only_its_modules() -> None:
    assert main._modules_for(["config", "get", "x"]) == ["bastion.cli.core"]
    assert main._modules_for(["audit", "prove"]) == ["bastion.cli.audit", "bastion.cli.crypto"]
    for args in ([], ["--help"], ["--version"], ["no-such-command"]):
        assert main._modules_for(args) == main.COMMAND_MODULES


def test_a_command_missing_from_the_subset_loads_everything() -> None:
    # a stale table (audit without crypto): `audit prove` is found after loading the rest
    code = ("import sys; from bastion.cli import main; "
            "main.COMMAND_OWNERS['audit'] = ('bastion.cli.audit',); "
            "sys.argv = ['bastion', 'audit', 'prove', '--help']; main.main()")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "Usage: bastion audit prove" in done.stdout
    wrong = _python(code.replace("'prove', '--help'", "'nosuch'"))
    assert wrong.returncode == 2
    assert wrong.stderr.strip().startswith("error: No such command 'nosuch'"), wrong.stderr

"""No mistake ever prints a traceback: every command, enumerated from the typer app, with a bad
flag, a bad argument and no terminal, through the console script's entry point.

The runs fork from one interpreter (``_fork_driver``): ~250 runs in seconds, each a process of
its own without a controlling terminal and with stdin at EOF. The issue's own examples also
run as real ``python -m bastion`` processes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from tests.integration.cli.conftest import ROOT, bastion, cli_env

BOGUS = "/nonexistent/bastion-bogus"

# Commands whose bare run (no arguments) would serve forever, open the network beyond
# loopback or download: they still get the bad-flag and bad-argument runs, which fail before
# anything starts.
NO_BARE_RUN = {
    "serve": "serves the API until stopped",
    "node serve": "serves llama.cpp and announces it over mDNS (multicast off loopback)",
    "gateway serve": "serves MCP over HTTP until stopped",
    "mcp serve": "serves MCP until its client goes",
    "voice wyoming": "serves Wyoming until stopped",
    "sandbox build-image": "debootstraps from a Debian mirror (internet)",
    "cluster status": "mDNS discovery browses the LAN when enabled",
}


def _commands() -> list[tuple[list[str], list[Any], bool]]:
    """(path, argument params, runs itself) for every group and command of the real app."""
    from bastion.cli import main as cli_main

    cli_main._load_commands()
    root = typer.main.get_command(cli_main.app)

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], list[Any], bool]]:
        subs = getattr(cmd, "commands", None)
        args = [p for p in cmd.params if p.param_type_name == "argument"]
        if subs is None:
            yield path, args, True
            return
        if path:
            yield path, args, bool(getattr(cmd, "invoke_without_command", False))
        for name, sub in subs.items():
            yield from walk(sub, [*path, name])

    return list(walk(root, []))


def _home(base: Path) -> Path:
    """A fresh home as ``bastion init`` writes it, with the model server unreachable."""
    from bastion.cli._init import build_config
    from bastion.config.loader import dump
    from bastion.hardware import detect, recommend

    hw = detect()
    raw = dump(build_config(hw, recommend(hw)), reveal=True)
    raw["model"].update(backend="openai", base_url="http://127.0.0.1:9/v1", name="none")
    raw["memory"] = {"enabled": True, "semantic": False}
    base.mkdir(parents=True)
    (base / "bastion.yaml").write_text(yaml.safe_dump(raw))
    (base / "workspace").mkdir()
    return base


def _runs(template: Path, tmp: Path) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    commands = _commands()
    names = {" ".join(path) for path, _, _ in commands}
    assert set(NO_BARE_RUN) <= names, "NO_BARE_RUN names a command that no longer exists"
    assert len(commands) > 70  # the walk found the whole CLI, not one group

    def add(kind: str, path: list[str], argv: list[str]) -> None:
        home = tmp / f"h{len(runs)}"
        shutil.copytree(template, home)
        runs.append({"kind": kind, "argv": argv, "home": str(home), "timeout": 30})

    for path, args, runs_itself in commands:
        name = " ".join(path)
        add("bad flag", path, [*path, "--no-such-flag"])
        required = [BOGUS for p in args if p.required]
        if required:
            add("bad argument", path, [*path, *required])  # runs without a terminal
        elif not args:
            add("bad argument", path, [*path, "no-such-argument"])
        if not required and runs_itself and name not in NO_BARE_RUN:
            add("no terminal", path, path)
    return runs


def test_every_command_fails_in_one_line(tmp_path: Path) -> None:
    template = _home(tmp_path / "template")
    runs = _runs(template, tmp_path)
    spec, out = tmp_path / "runs.json", tmp_path / "out.json"
    spec.write_text(json.dumps(runs))
    env = cli_env(template)
    env["PYTHONPATH"] = f"{ROOT / 'src'}:{ROOT}"
    proc = subprocess.run([sys.executable, "-m", "tests.integration.cli._fork_driver",
                           str(spec), str(out)], env=env, cwd=tmp_path, timeout=600,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    problems = []
    for run, res in zip(runs, json.loads(out.read_text()), strict=True):
        text = res["out"] + res["err"]
        cmd = "bastion " + " ".join(run["argv"])
        lines = [ln for ln in res["err"].splitlines() if ln.startswith("error: ")]
        if "Traceback" in text:
            problems.append(f"{cmd} ({run['kind']}): traceback\n{text[-1500:]}")
        elif run["argv"][:2] == ["sandbox", "run"]:
            continue  # its exit code and stderr are the sandboxed command's own
        elif res["rc"] not in (0, 1, 2):
            problems.append(f"{cmd} ({run['kind']}): exit {res['rc']}\n{text[-600:]}")
        elif res["rc"] in (1, 2) and not (lines and "(fix: " in lines[-1]):
            problems.append(f"{cmd} ({run['kind']}): exit {res['rc']} without an "
                            f"'error: ... (fix: ...)' line\n{text[-600:]}")
        elif run["kind"] in ("bad flag", "bad argument") and res["rc"] == 0 \
                and run["argv"][-1] in ("--no-such-flag", "no-such-argument"):
            problems.append(f"{cmd} ({run['kind']}): accepted")
    assert not problems, f"{len(problems)} of {len(runs)} runs:\n\n" + "\n\n".join(problems)


@pytest.mark.parametrize("argv, rc, needle", [
    (["--version"], 0, "bastion 0.1.0"),
    (["-h"], 0, "Usage: bastion"),
    (["foo"], 2, "error: No such command 'foo' (fix: bastion --help)"),
    (["ask", "--nope", "x"], 2, "error: No such option: --nope (fix: bastion ask --help)"),
    (["audit", "verify", "--db", "/"], 1, "error: no audit database at /audit.db"),
    (["crypto", "unseal", BOGUS], 2, "does not exist"),
    (["crypto", "hsm", "init"], 1, "there is no terminal"),
])
def test_the_issues_examples_as_processes(bastion_home: Path, argv: list[str], rc: int,
                                          needle: str) -> None:
    shutil.rmtree(bastion_home)
    _home(bastion_home)
    if argv[:2] == ["crypto", "hsm"]:
        cfg = yaml.safe_load((bastion_home / "bastion.yaml").read_text())
        cfg.setdefault("crypto", {})["hsm"] = {
            "module": "/usr/lib/softhsm/libsofthsm2.so", "pin": "secret://env/hsm_pin"}
        (bastion_home / "bastion.yaml").write_text(yaml.safe_dump(cfg))
    env = cli_env(bastion_home) | {"BASTION_SECRET_HSM_PIN": "1234"}
    res = subprocess.run([sys.executable, "-m", "bastion", *argv], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    text = res.stdout + res.stderr
    assert "Traceback" not in text
    assert res.returncode == rc, text
    assert needle in text
    if rc:
        assert res.stderr.count("\n") == 1, res.stderr  # one line


def test_prompts_without_a_terminal_refuse_with_the_flag(bastion_home: Path) -> None:
    """y/N questions (sessions delete, secrets rm) need --yes when nobody can answer."""
    shutil.rmtree(bastion_home)
    _home(bastion_home)
    echo = subprocess.run([sys.executable, "-m", "bastion", "secrets", "set", "demo"],
                          input="s3cret-value\n", env=cli_env(bastion_home), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert echo.returncode == 0, echo.stderr
    rm = subprocess.run([sys.executable, "-m", "bastion", "secrets", "rm", "demo"],
                        env=cli_env(bastion_home), cwd=ROOT, capture_output=True, text=True,
                        timeout=60, stdin=subprocess.DEVNULL)
    assert rm.returncode == 1 and "there is no terminal" in rm.stderr
    assert "(fix: bastion secrets rm demo --yes)" in rm.stderr
    assert "secret://sops/demo" in bastion(bastion_home, "secrets", "list").stdout  # kept
    assert bastion(bastion_home, "secrets", "rm", "demo", "--yes").returncode == 0


def test_sessions_delete_without_a_terminal_needs_yes(served_home: Path) -> None:
    assert bastion(served_home, "ask", "--session", "demo", "hello").returncode == 0
    cmd = [sys.executable, "-m", "bastion", "sessions", "delete", "demo"]
    refused = subprocess.run(cmd, env=cli_env(served_home), cwd=ROOT, capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "(fix: bastion sessions delete demo --yes)" in refused.stderr
    assert "demo" in bastion(served_home, "sessions", "list").stdout  # kept
    assert subprocess.run([*cmd, "--yes"], env=cli_env(served_home), cwd=ROOT,
                          capture_output=True, timeout=60).returncode == 0

"""``bastion init`` at a terminal asks before writing; ``--yes`` never asks."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect

from tests.integration.cli.conftest import ROOT, bastion, cli_env


def test_init_asks_at_a_terminal_and_respects_no(bastion_home: Path) -> None:
    child = pexpect.spawn(sys.executable, ["-m", "bastion", "init"], env=cli_env(bastion_home),
                          cwd=str(ROOT), encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect("recommended")
    child.expect(r"Write .*bastion\.yaml\? \[Y/n\]")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert not (bastion_home / "bastion.yaml").exists()

    done = bastion(bastion_home, "init", "--yes")  # no terminal, no prompt, no waiting
    assert done.returncode == 0 and (bastion_home / "bastion.yaml").exists()

"""`bastion sandbox status|run|ls|kill` against the real backends."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.config.model import LimitsConfig
from bastion.security.audit import AuditLog
from bastion.security.sandbox import _running
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from bastion.security.sandbox.factory import create_sandbox

pytestmark = pytest.mark.skipif(BubblewrapSandbox.available() is not None,
                                reason="bubblewrap missing")


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args], capture_output=True,
                          text=True, timeout=120)


def test_status_and_run(bastion_home: Path) -> None:
    status = bastion("sandbox", "status")
    assert status.returncode == 0 and "bubblewrap" in status.stdout and "available" in status.stdout
    ran = bastion("sandbox", "run", "--backend", "bubblewrap", "--", "sh", "-c",
                  "id -u; echo out; exit 3")
    assert ran.returncode == 3 and ran.stdout == "1000\nout\n"
    audit = AuditLog(bastion_home / "audit" / "audit.db")
    ev = audit.events(kind="sandbox_run")[0]
    audit.close()
    assert ev.arguments == {"argv": ["sh", "-c", "id -u; echo out; exit 3"]}
    assert bastion("sandbox", "run").returncode == 1


async def test_ls_and_kill_a_live_run(workspace: Path) -> None:
    box, problem = create_sandbox("bubblewrap", workspace, LimitsConfig(wall_seconds=60))
    assert box is not None, problem
    task = asyncio.ensure_future(box.run(["sleep", "40.517"]))
    for _ in range(100):
        live = [r for r in _running.runs() if "40.517" in r.get("command", "")]
        if live:
            break
        await asyncio.sleep(0.05)
    assert live and live[0]["backend"] == "bubblewrap"
    assert _running.kill(live[0]["id"])
    result = await asyncio.wait_for(task, 10)
    assert result.exit_code != 0
    assert not [r for r in _running.runs() if "40.517" in r.get("command", "")]
    assert not _running.kill("nope")

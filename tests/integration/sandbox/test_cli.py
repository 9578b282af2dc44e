"""`bastion sandbox status|run|ls|kill` against the real backends."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bastion.config.model import LimitsConfig
from bastion.security.audit import AuditLog
from bastion.security.egress.netns import problem as egress_problem
from bastion.security.sandbox import _running
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from bastion.security.sandbox.factory import create_sandbox
from bastion.security.sandbox.gvisor import GVisorSandbox

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
    ev = audit.events(kind="tool_call")[0]  # a shell tool call through the gateway
    audit.close()
    assert (ev.tool, ev.actor) == ("shell", "cli")
    assert ev.arguments == {"command": "sh -c 'id -u; echo out; exit 3'"}
    assert bastion("sandbox", "run").returncode == 1


def _config(home: Path, **security: object) -> None:
    (home / "bastion.yaml").write_text(yaml.safe_dump({"security": security}))


def test_run_obeys_the_gateway_policy(bastion_home: Path) -> None:
    """security.tools.shell: deny refuses `sandbox run` too; nothing runs."""
    _config(bastion_home, tools={"shell": "deny"})
    ran = bastion("sandbox", "run", "--", "sh", "-c", "echo ran > /workspace/ran")
    assert ran.returncode == 1 and "denied" in ran.stderr and "Traceback" not in ran.stderr
    assert not (bastion_home / "workspace" / "ran").exists()


@pytest.mark.skipif(GVisorSandbox.available() is not None, reason="runsc missing")
def test_run_uses_the_shells_own_sandbox(bastion_home: Path) -> None:
    """security.tool_sandboxes.shell picks the backend, as it does for the shell tool."""
    _config(bastion_home, sandbox="bubblewrap", tool_sandboxes={"shell": "gvisor"})
    ran = bastion("sandbox", "run", "--", "sh", "-c", "dmesg | head -n 3")
    assert ran.returncode == 0, ran.stderr
    assert "gVisor" in ran.stdout  # bubblewrap has no such kernel log


@pytest.mark.needs_root
@pytest.mark.skipif(egress_problem() is not None, reason=str(egress_problem()))
def test_run_gets_the_shells_egress_namespace(bastion_home: Path) -> None:
    """security.egress.shell gives the run the shell tool's own network namespace."""
    _config(bastion_home, sandbox="bubblewrap",
            egress={"shell": {"domains": [], "cidrs": ["192.0.2.1/32"], "ports": [443]}})
    ran = bastion("sandbox", "run", "--", "sh", "-c", "cat /proc/net/dev")
    assert ran.returncode == 0, ran.stderr
    names = {line.split(":")[0].strip() for line in ran.stdout.splitlines() if ":" in line}
    assert names - {"lo"}, ran.stdout  # a veth besides loopback: not the network-less default


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

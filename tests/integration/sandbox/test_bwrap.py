"""The bubblewrap backend against the real bwrap: confinement, no network, limits, audit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bastion.config.model import Config, LimitsConfig
from bastion.memory.base import EphemeralMemory
from bastion.messages import ToolCall
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from bastion.security.sandbox.factory import create_sandbox
from bastion.testing import ScriptedModel, call, say
from tests.integration.sandbox.conftest import leftover_processes

pytestmark = pytest.mark.skipif(
    BubblewrapSandbox.available() is not None, reason=str(BubblewrapSandbox.available())
)

LIMITS = LimitsConfig(wall_seconds=20, cpu_seconds=1, memory_mb=256, max_processes=32,
                      file_size_mb=1, output_bytes=4096)


def sandbox(ws: Path, **overrides: object) -> BubblewrapSandbox:
    limits = LIMITS.model_copy(update=overrides)
    box, problem = create_sandbox("bubblewrap", ws, limits)
    assert box is not None, problem
    assert isinstance(box, BubblewrapSandbox)
    return box


async def sh(box: BubblewrapSandbox, script: str) -> tuple[int, str]:
    res = await box.run(["/bin/sh", "-c", script])
    return res.exit_code, res.stdout + res.stderr


async def test_identity_env_and_workspace(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST_SECRET_VAR", "hunter2-host")
    box = sandbox(workspace)
    code, out = await sh(box, "id -u; pwd; env; grep -E 'NoNewPrivs|CapEff' /proc/self/status;"
                              " echo made > note.txt")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "1000" and lines[1] == "/workspace"
    assert "hunter2-host" not in out and "BASTION_HOME" not in out
    assert "NoNewPrivs:\t1" in out and "CapEff:\t0000000000000000" in out
    assert (workspace / "note.txt").read_text() == "made\n"


async def test_killed_at_time_limit_with_its_whole_tree(workspace: Path) -> None:
    box = sandbox(workspace)
    marker = "31.4159"
    res = await box.run(["/bin/sh", "-c", f"(sleep {marker}; echo late > late) & sleep {marker}"],
                        timeout_s=1)
    assert res.timed_out and res.killed_reason == "timeout"
    await asyncio.sleep(0.2)
    assert leftover_processes(marker) == []
    assert not (workspace / "late").exists()


async def test_agent_shell_call_through_gateway_is_audited(workspace: Path) -> None:
    from bastion.app import build_app

    config = Config.model_validate({
        "agent": {"workspace": str(workspace)},
        "security": {"limits": LIMITS.model_dump()},
    })
    model = ScriptedModel(call("shell", command="echo hello > greeting.txt; ls"), say("done"))
    app = build_app(config, model=model, memory=EphemeralMemory())
    try:
        done = await app.agent().ask("make a greeting file")
        assert done.answer == "done"
        assert (workspace / "greeting.txt").read_text() == "hello\n"
        tool_msg = model.seen[1].messages[-1]
        assert tool_msg.role == "tool" and "greeting.txt" in tool_msg.content
        events = app.audit.events(tool="shell")
        assert len(events) == 1 and events[0].decision == "allowed"
        assert events[0].arguments == {"command": "echo hello > greeting.txt; ls"}
        direct = await app.gateway.execute(ToolCall("python", {"code": "print(6*7)"}))
        assert direct.ok and "42" in direct.text
    finally:
        await app.aclose()


async def test_warm_pool_serves_calls_with_the_same_confinement(workspace: Path) -> None:
    from bastion.security.sandbox.base import Limits, SandboxSpec

    box = BubblewrapSandbox(SandboxSpec(workspace, Limits(wall_seconds=10)), warm=1)
    assert box.warm_pool is not None
    await box.warm_pool.fill()
    res = await box.run(["/bin/sh", "-c", "id -u; echo $FOO; cat; pwd; echo x > /etc/x"],
                        stdin=b"piped\n", env={"FOO": "bar"})
    assert res.stdout == "1000\nbar\npiped\n/workspace\n"
    assert "Read-only file system" in res.stderr
    await box.warm_pool.fill()
    slow = await box.run(["sleep", "33.77"], timeout_s=0.5)
    assert slow.killed_reason == "timeout"
    await box.warm_pool.close()
    await asyncio.sleep(0.2)
    assert leftover_processes("33.77") == []
    assert leftover_processes("os.write(1,b") == []  # no waiter left behind


@pytest.mark.parametrize("warm", [0, 1], ids=["cold", "warm"])
async def test_warm_and_cold_calls_end_the_same_way(workspace: Path, warm: int) -> None:
    """A warm call (output over FIFOs, the sandbox torn down afterwards) behaves as a cold one."""
    from bastion.security.sandbox.base import Limits, SandboxSpec

    box = BubblewrapSandbox(SandboxSpec(workspace, Limits(wall_seconds=20, cpu_seconds=1,
                                                          file_size_mb=1)), warm=warm)

    async def run(script: str, **kw: object) -> tuple[int, str | None, str]:
        if box.warm_pool is not None:
            await box.warm_pool.fill()
        res = await box.run(["/bin/sh", "-c", script], **kw)  # type: ignore[arg-type]
        return res.exit_code, res.killed_reason, res.stdout

    try:
        assert await run("echo out; exit 3") == (3, None, "out\n")
        assert await run("cat; echo end", stdin=b"in\n") == (0, None, "in\nend\n")
        assert (await run("while :; do :; done"))[1] == "cpu_time"
        assert (await run("head -c 3000000 /dev/zero > big"))[1] == "file_size"
        code, _, out = await run("(sleep 41.3; touch late) & echo started")
        assert (code, out) == (0, "started\n")
        if hasattr(box, "drain"):
            await box.drain()
        await asyncio.sleep(0.3)
        assert leftover_processes("41.3") == [] and not (workspace / "late").exists()
    finally:
        if box.warm_pool is not None:
            await box.warm_pool.close()

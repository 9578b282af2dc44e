"""The bubblewrap backend against the real bwrap: confinement, no network, limits, audit."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bastion.config.model import Config, LimitsConfig
from bastion.llm.messages import ToolCall
from bastion.memory.base import EphemeralMemory
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from bastion.security.sandbox.factory import create_sandbox
from tests.fakes.model import ScriptedModel, call, say
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


async def test_cannot_write_outside_the_workspace(workspace: Path, tmp_path: Path) -> None:
    box = sandbox(workspace)
    target = tmp_path / "outside.txt"
    script = (f"echo x > {target}; echo x > /etc/evil; echo x > /usr/evil; echo x > /evil;"
              " echo x > /workspace/../evil; mkdir -p /tmp/t && echo ok > /tmp/t/f && cat /tmp/t/f")
    res = await box.run(["/bin/sh", "-c", script])
    assert res.stdout == "ok\n" and res.stderr.count("Read-only file system") == 4
    assert not target.exists()
    assert not Path("/etc/evil").exists() and not Path("/evil").exists()
    assert not (workspace.parent / "evil").exists()


async def test_cannot_read_host_secrets(workspace: Path, bastion_home: Path) -> None:
    cfg = bastion_home / "bastion.yaml"
    cfg.write_text("api:\n  token: tok-very-secret-123\n")
    box = sandbox(workspace)
    code, out = await sh(box, f"cat {cfg}; cat /etc/shadow; ls /root /home; ls ~/.ssh;"
                              " cat /proc/1/root/etc/shadow; cat /proc/self/root/etc/shadow")
    assert "tok-very-secret-123" not in out and "root:" not in out
    assert out.count("No such file or directory") >= 5


async def test_no_network_even_to_loopback(workspace: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    box = sandbox(workspace)
    code, out = await sh(box, f"python3 -c \"import socket; socket.create_connection(('127.0.0.1',"
                              f" {port}), timeout=2)\"; echo rc=$?; cat /sys/class/net/*/operstate"
                              " 2>/dev/null; ls /sys/class/net 2>&1")
    assert "rc=1" in out and ("Connection refused" in out or "unreachable" in out)
    with pytest.raises(BlockingIOError):
        server.accept()  # nothing ever reached the host's listener
    server.close()


async def test_killed_at_time_limit_with_its_whole_tree(workspace: Path) -> None:
    box = sandbox(workspace)
    marker = "31.4159"
    res = await box.run(["/bin/sh", "-c", f"(sleep {marker}; echo late > late) & sleep {marker}"],
                        timeout_s=1)
    assert res.timed_out and res.killed_reason == "timeout"
    await asyncio.sleep(0.2)
    assert leftover_processes(marker) == []
    assert not (workspace / "late").exists()


async def test_resource_limits(workspace: Path) -> None:
    box = sandbox(workspace)
    spin = await box.run(["/bin/sh", "-c", "while :; do :; done"])
    assert spin.killed_reason == "cpu_time"
    big = await box.run(["/bin/sh", "-c", "head -c 5000000 /dev/zero > big.bin"])
    assert big.killed_reason == "file_size"
    assert (workspace / "big.bin").stat().st_size <= 1024 * 1024
    mem = await box.run(["python3", "-c", "x = bytearray(1024 * 1024 * 1024)"])
    assert mem.exit_code != 0 and "MemoryError" in mem.stderr
    bomb = await box.run(["/bin/sh", "-c", "for i in $(seq 100); do sleep 30.271 & done; wait"],
                         timeout_s=1)
    assert "Cannot fork" in bomb.stderr or "process limit" in bomb.stderr
    await asyncio.sleep(0.2)
    assert leftover_processes("30.271") == []
    flood = await box.run(["/bin/sh", "-c", "yes"])
    assert flood.killed_reason == "output" and len(flood.stdout) <= 4096


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

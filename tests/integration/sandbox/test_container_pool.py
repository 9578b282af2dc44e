"""The container warm pool (podman and docker) on the request path: gateway -> shell tool ->
a pre-started container.

A call proves it ran in a container started before the call: its PID 1 (the waiter that
exec'd the command) started earlier than the call did (kernel start times, not durations).
Each pooled container serves one call: /tmp of call 1 is gone in call 2; the workspace stays.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bastion.config.model import Config
from bastion.memory.base import EphemeralMemory
from bastion.messages import ToolCall
from bastion.security.sandbox.container import WARM_PREFIX, ContainerSandbox
from bastion.testing import ScriptedModel
from tests._dockerd import needs_backend

ENGINES = [pytest.param(k, marks=needs_backend(k)) for k in ("podman", "docker")]
TICKS = os.sysconf("SC_CLK_TCK")


def _now_ticks() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * TICKS)


def _pooled(cli: list[str]) -> list[str]:
    out = subprocess.run([*cli, "ps", "-a", "--format", "{{.Names}}", "--filter",
                          f"name=^{WARM_PREFIX}{os.getpid()}-"], capture_output=True, text=True)
    return out.stdout.split()


@pytest.mark.parametrize("engine", ENGINES)
async def test_calls_use_prestarted_containers_and_share_no_state(engine: str,
                                                                 tmp_path: Path) -> None:
    from bastion.app import build_app

    config = Config.model_validate({
        "agent": {"workspace": str(tmp_path)},
        "security": {"sandbox": engine, "warm_pool": 1, "tools": {"shell": "allow"}},
    })
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    box = app.gateway.environment.sandbox
    assert isinstance(box, ContainerSandbox) and box.name == engine
    assert box.warm_pool is not None
    pooled_before = set(_pooled(box.cli))  # another test's pool in this process is not ours
    try:
        seen = []
        alive = ("for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null"
                 " | grep -c '^sleep 3133[7]'; ")
        for command in ("echo call1 > /tmp/leak; echo kept > note.txt; "
                        "(sleep 31337 >/dev/null 2>&1 &); sleep 0.3; " + alive +
                        "cut -d' ' -f22 /proc/1/stat",
                        "cat /tmp/leak 2>/dev/null || echo no-leak; cat note.txt; " + alive +
                        "cut -d' ' -f22 /proc/1/stat"):
            await box.warm_pool.fill()
            assert len(set(_pooled(box.cli)) - pooled_before) == 1  # started ahead of the call
            before = _now_ticks()
            res = await app.gateway.execute(ToolCall("shell", {"command": command}))
            assert res.ok, res.text
            out = res.data["stdout"].split()
            assert int(out[-1]) < before  # PID 1 predates the call: a pre-started container
            seen.append(out)
            await box.drain()
        assert seen[0][0] == "1"  # call 1's background process, seen from call 1
        # /tmp is fresh, call 1's background process is not there, the workspace persists
        assert seen[1][:3] == ["no-leak", "kept", "0"]
        await box.warm_pool.fill()  # stdin, stderr and the exit status pass through the pool
        res3 = await box.run(["sh", "-c", "cat; echo oops >&2; exit 3"], stdin=b"piped")
        assert (res3.exit_code, res3.stdout, res3.stderr) == (3, "piped", "oops\n")
        await box.drain()
    finally:
        await app.aclose()
    assert set(_pooled(box.cli)) - pooled_before == set()  # used and waiting ones removed

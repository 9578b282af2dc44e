"""Which isolation each tool gets (auto, per-tool overrides) and the host CPU meter."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bastion.config.model import Config
from bastion.security.sandbox import _cgroup, factory
from bastion.security.sandbox._proc import run_tree, spawn


class _Backend:
    def __init__(self, problem: str | None) -> None:
        self.problem = problem

    def available(self) -> str | None:
        return self.problem


def _machine(monkeypatch: pytest.MonkeyPatch, **problems: str | None) -> None:
    monkeypatch.setattr(factory, "backend_class",
                        lambda kind: _Backend(problems.get(kind)))


def test_auto_prefers_gvisor_only_when_it_passes_its_self_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch)
    assert factory.explain_kind("auto") == (
        "gvisor", "runsc is installed and passed its self-check")
    _machine(monkeypatch, gvisor="runsc starts, but stat/ls fail inside it")
    backend, why = factory.explain_kind("auto")
    assert backend == "bubblewrap" and why == (
        "gVisor unusable: runsc starts, but stat/ls fail inside it")
    assert factory.explain_kind("podman") == ("podman", "configured")
    assert factory.explain_kind("docker") == ("docker", "configured")
    # auto never picks a container engine, even when gVisor fails and docker would work
    _machine(monkeypatch, gvisor="no runsc")
    assert factory.explain_kind("auto")[0] == "bubblewrap"


def test_report_per_tool_with_overrides_egress_and_problems(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, podman="podman is not installed")
    config = Config.model_validate({"security": {
        "tool_sandboxes": {"python": "podman"},
        "egress": {"shell": {"domains": ["example.org"]}},
    }})
    report = {i.tool: i for i in factory.isolation_report(config)}
    assert report["shell"].backend == "gvisor" and report["shell"].problem is None
    assert report["shell"].why == ("security.sandbox: auto (runsc is installed and passed its "
                                   "self-check); own egress namespace")
    assert report["python"].backend == "podman"
    assert report["python"].why == "security.tool_sandboxes.python: podman"
    assert report["python"].problem == "podman is not installed"
    off = factory.isolation_report(Config.model_validate({"security": {"sandbox": "none"}}))
    assert {(i.tool, i.backend) for i in off} == {("shell", "none"), ("python", "none")}
    assert all(i.problem for i in off)


async def test_cpu_meter_counts_the_whole_tree() -> None:
    # a real process tree: two children spinning; the meter must see both
    code = ("import os,time\n"
            "for _ in range(2):\n"
            "    if os.fork() == 0:\n"
            "        t = time.process_time()\n"
            "        while time.process_time() - t < 0.2: pass\n"
            "        os._exit(0)\n"
            "for _ in range(2): os.wait()\n")
    spawned = await spawn([sys.executable, "-c", code], env={}, stdin_pipe=False,
                          cpu_meter=True)
    assert spawned.cpu is not None
    meter = spawned.cpu
    await spawned.proc.wait()
    used = await asyncio.to_thread(meter.seconds)
    if meter.usage_file is not None:  # a cgroup: exact, children included
        assert used >= 0.35, used
        assert meter.try_remove()


async def test_cpu_budget_kills_as_cpu_time_not_timeout() -> None:
    spawned = await spawn([sys.executable, "-c", "while True: pass"], env={},
                          stdin_pipe=False, cpu_meter=True)
    from bastion.security.sandbox._proc import drive

    res = await drive(spawned, stdin=None, wall_seconds=120, output_bytes=100,
                      cpu_seconds=0.3)
    assert res.killed_reason == "cpu_time" and not res.timed_out
    # without a budget, run_tree is unchanged: the wall clock binds
    res = await run_tree([sys.executable, "-c", "import time; time.sleep(30)"], env={},
                         stdin=None, wall_seconds=0.5, output_bytes=100)
    assert res.killed_reason == "timeout"


async def test_proc_fallback_counts_descendants() -> None:
    # a child that spins in a grandchild: the tree sum sees the grandchild's CPU
    code = ("import os,time\n"
            "if os.fork() == 0:\n"
            "    t = time.process_time()\n"
            "    while time.process_time() - t < 0.3: pass\n"
            "    time.sleep(30)\n"
            "time.sleep(30)\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                start_new_session=True)
    meter = _cgroup.CpuMeter(None, None, 1.0, root_pid=proc.pid)
    try:
        for _ in range(600):
            if await asyncio.to_thread(meter.seconds) >= 0.25:
                break
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(meter.seconds) >= 0.25
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

"""The gVisor backend against the real runsc: coreutils work, CPU budget, warm pool, auto."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from bastion.config.model import Config, LimitsConfig
from bastion.memory.base import EphemeralMemory
from bastion.messages import ToolCall
from bastion.security.sandbox.base import Limits, SandboxSpec
from bastion.security.sandbox.factory import create_sandbox, isolation_report, resolve_kind
from bastion.security.sandbox.gvisor import GVisorSandbox
from bastion.testing import ScriptedModel
from tests.integration.sandbox.conftest import leftover_processes

pytestmark = pytest.mark.skipif(GVisorSandbox.available() is not None,
                                reason=str(GVisorSandbox.available()))

LIMITS = LimitsConfig(wall_seconds=60, cpu_seconds=1, memory_mb=256, max_processes=32,
                      file_size_mb=1, output_bytes=8192)


def gvisor(ws: Path, limits: LimitsConfig = LIMITS) -> GVisorSandbox:
    box, problem = create_sandbox("gvisor", ws, limits)
    assert isinstance(box, GVisorSandbox), problem
    return box


async def test_ls_find_and_stat_work(workspace: Path) -> None:
    (workspace / "data.txt").write_text("12345")
    (workspace / "sub").mkdir()
    (workspace / "sub" / "deep.py").write_text("print(1)\n")
    # seven processes under ptrace: 1 CPU-second (the budget test's limit) is too tight on a
    # cold sandbox (CI: killed_reason='cpu_time' after all output was written)
    box = gvisor(workspace, LIMITS.model_copy(update={"cpu_seconds": 10}))
    res = await box.run(["/bin/sh", "-c",
                         "ls -l; echo ---; ls -la /usr | head -2; echo ---; find . -type f | sort;"
                         " echo ---; stat -c '%s %F %n' data.txt sub; echo ---; ls -ld /tmp"])
    assert res.exit_code == 0, res.stderr
    parts = res.stdout.split("---\n")
    listing = parts[0].splitlines()
    assert listing[0].startswith("total ")
    assert any(line.startswith("-rw") and line.endswith(" data.txt") and " 5 " in line
               for line in listing), listing
    assert any(line.startswith("d") and line.endswith(" sub") for line in listing), listing
    assert "?" not in parts[0] and "cannot access" not in res.stderr
    assert parts[1].startswith("total ")
    assert parts[2].split() == ["./data.txt", "./sub/deep.py"]
    assert parts[3].splitlines() == ["5 regular file data.txt", "4096 directory sub"] or (
        parts[3].splitlines()[0] == "5 regular file data.txt"
        and parts[3].splitlines()[1].endswith(" directory sub"))
    assert parts[4].startswith("drwxrwxrwt")
    # the kernel really is gVisor's
    kernel = await box.run(["cat", "/proc/version"])
    assert "Sun Jan 10 15:06:54 PST 2016" in kernel.stdout or "gVisor" in kernel.stdout


async def test_cpu_budget_binds_before_the_wall_clock(workspace: Path) -> None:
    box = gvisor(workspace)  # wall 60 s, CPU 1 s
    spin = await box.run(["python3", "-c", "while True: pass"])
    assert spin.killed_reason == "cpu_time" and not spin.timed_out
    # A sleeper uses no CPU: the budget does not fire, the wall clock does.
    sleeper = await box.run(["sleep", "30"], timeout_s=2)
    assert sleeper.killed_reason == "timeout"
    # gVisor's own boot is not charged: a short program with a tiny budget still runs.
    ok = await box.run(["python3", "-c", "print(sum(range(1000)))"])
    assert ok.exit_code == 0 and ok.stdout == "499500\n"


async def test_warm_pool_one_fresh_container_per_call(workspace: Path) -> None:
    box = GVisorSandbox(SandboxSpec(workspace, Limits(wall_seconds=30, cpu_seconds=2)), warm=1)
    assert box.warm_pool is not None
    try:
        await box.warm_pool.fill()
        first = await box.run(["/bin/sh", "-c", "echo $FOO; cat; pwd; echo secret > /tmp/left;"
                               " sleep 37.913 & echo x > /etc/x"],
                              stdin=b"piped\n", env={"FOO": "bar"})
        assert first.stdout == "bar\npiped\n/workspace\n", first.stderr
        # read-only root; and a root bastion's sandbox user is not root (F2) inside either
        assert "Read-only file system" in first.stderr or "Permission denied" in first.stderr
        await box.warm_pool.fill()
        second = await box.run(["/bin/sh", "-c", "cat /tmp/left; ps -e | grep -c sleep; ls -l"])
        assert "No such file" in second.stderr  # nothing from the first call's /tmp
        assert second.stdout.splitlines()[0] == "0"  # nor its background process
        await box.warm_pool.fill()
        spin = await box.run(["/bin/sh", "-c", "while :; do :; done"])
        assert spin.killed_reason == "cpu_time"
    finally:
        await box.aclose()
        box.close()
    await asyncio.sleep(0.3)
    assert leftover_processes("37.913") == []
    assert leftover_processes("os.write(1,b") == []


async def test_auto_gives_code_tools_gvisor_and_tool_sandboxes_override(workspace: Path) -> None:
    from bastion.app import build_app

    assert resolve_kind("auto") == "gvisor"
    config = Config.model_validate({"agent": {"workspace": str(workspace)},
                                    "security": {"tool_sandboxes": {"shell": "bubblewrap"}}})
    assert config.security.sandbox == "auto"  # the default
    report = {i.tool: i for i in isolation_report(config)}
    assert report["python"].backend == "gvisor" and "self-check" in report["python"].why
    assert report["shell"].backend == "bubblewrap"
    assert report["shell"].why == "security.tool_sandboxes.shell: bubblewrap"
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    try:
        py = await app.gateway.execute(ToolCall("python", {"code": "print(open('/proc/version')"
                                                                   ".read())"}))
        sh = await app.gateway.execute(ToolCall("shell", {"command": "cat /proc/version"}))
        assert "Sun Jan 10 15:06:54 PST 2016" in py.text or "gVisor" in py.text, py.text
        assert "Sun Jan 10 15:06:54 PST 2016" not in sh.text  # bubblewrap: the host kernel
    finally:
        await app.aclose()


def test_doctor_and_status_report_isolation_per_tool(bastion_home: Path) -> None:
    from typer.testing import CliRunner

    from bastion.cli._doctor import run_checks
    from bastion.cli.main import _load_commands, app

    (bastion_home / "bastion.yaml").write_text(
        "security:\n  tool_sandboxes:\n    python: bubblewrap\n")
    _load_commands()
    status = CliRunner().invoke(app, ["sandbox", "status"])
    assert status.exit_code == 0, status.output
    text = " ".join(status.output.split())  # rich wraps long lines
    assert ("shell runs in: gvisor (security.sandbox: auto (runsc is installed and passed its "
            "self-check))") in text
    assert "python runs in: bubblewrap (security.tool_sandboxes.python: bubblewrap)" in text
    checks = {c.name: c for c in run_checks()}
    assert checks["isolation: shell"].status == "OK"
    assert checks["isolation: shell"].detail.startswith("gvisor (security.sandbox: auto")
    assert checks["isolation: python"].status == "OK"
    assert checks["isolation: python"].detail == (
        "bubblewrap (security.tool_sandboxes.python: bubblewrap)")
    assert checks["sandbox"].status == "OK" and "auto -> gvisor" in checks["sandbox"].detail


def test_self_check_passes_and_names_the_statx_bug_without_the_shim(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import subprocess

    from bastion.security.sandbox import gvisor as gv

    runsc = shutil.which("runsc")
    assert runsc is not None
    assert GVisorSandbox._self_check(runsc) is None  # the real check, not the cached pass
    monkeypatch.setattr(gv, "_shim_library", lambda: None)  # as on a host without a compiler
    problem = GVisorSandbox._self_check(runsc)
    version = subprocess.run([runsc, "--version"], capture_output=True, text=True).stdout
    if "20221219" in version:  # Debian 12's runsc rejects AT_NO_AUTOMOUNT
        assert problem == ("runsc starts, but stat/ls fail inside it (statx AT_NO_AUTOMOUNT): "
                           "no C compiler to build bastion's statx shim "
                           "(fix: apt-get install gcc libc6-dev)")
    else:  # a fixed runsc needs no shim
        assert problem is None, problem


def test_root_and_mount_points_usable_under_a_strict_umask(workspace: Path, tmp_path: Path) -> None:
    """bastion's CLI runs with umask 077; the (non-root) sandbox user must still enter the
    root's /etc/ssl and the mount points runsc creates for ro_paths (an MCP server's code)."""
    code = tmp_path / "srv" / "lib"
    code.mkdir(parents=True)
    (code / "m.txt").write_text("mod\n")
    for path in (code.parent, code, code / "m.txt"):
        path.chmod(0o755)
    old = os.umask(0o077)
    try:
        box = GVisorSandbox(SandboxSpec(workspace, Limits(wall_seconds=30)),
                            rootfs=tmp_path / "root")
        argv = box.command(["/bin/sh", "-c", f"cat {code}/m.txt; cat /etc/ssl/openssl.cnf"
                            " > /dev/null && echo ssl"], ro_paths=[code])
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=60, env=box.launch_env(None))
        box.close()
    finally:
        os.umask(old)
    assert proc.stdout == "mod\nssl\n", proc.stderr

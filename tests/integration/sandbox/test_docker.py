"""The docker engine against a real Docker daemon (the tests' own, see tests/_dockerd.py).

What the daemon itself says about a sandbox container (read-only root, no capabilities,
no-new-privileges, an unprivileged user, no network, limits, the workspace the only writable
bind), that a daemon which is down or silent is a one-line error with the fix within
seconds (never a hang), and what ``doctor`` and ``bastion sandbox status`` say about the engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config.model import Config, LimitsConfig
from bastion.errors import SandboxError
from bastion.security.sandbox import base, docker
from bastion.security.sandbox.base import NetworkPolicy, SandboxSpec
from bastion.security.sandbox.docker import REMAP_FIX, DockerSandbox
from bastion.security.sandbox.factory import build_sandbox, create_sandbox
from tests._dockerd import address, ensure, needs_backend

pytestmark = [pytest.mark.needs_root, needs_backend("docker")]
LIMITS = LimitsConfig(wall_seconds=20, cpu_seconds=5, memory_mb=256, max_processes=32,
                      file_size_mb=1, output_bytes=4096)


def _socket_path() -> str:
    return os.environ["DOCKER_HOST"].removeprefix("unix://")


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    base._PROBED.pop(DockerSandbox, None)
    yield
    base._PROBED.pop(DockerSandbox, None)  # the next test probes the real daemon again


async def test_the_daemon_confirms_every_confinement(workspace: Path) -> None:
    box, problem = create_sandbox("docker", workspace, LIMITS, warm=1)
    assert isinstance(box, DockerSandbox), problem
    assert box.warm_pool is not None
    try:
        await box.warm_pool.fill()
        names = subprocess.run([*box.cli, "ps", "--format", "{{.Names}}", "--filter",
                                f"name=^bastion-warm-{os.getpid()}-"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert len(names) == 1
        raw = subprocess.run([*box.cli, "inspect", names[0]], capture_output=True, text=True,
                             check=True).stdout
        host = json.loads(raw)[0]["HostConfig"]
        cfg = json.loads(raw)[0]["Config"]
        mounts = json.loads(raw)[0]["Mounts"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["Privileged"] is False and host["NetworkMode"] == "none"
        assert cfg["User"] not in ("", "0", "root") and not cfg["User"].startswith("0:")
        assert host["PidsLimit"] == LIMITS.max_processes + 1
        assert host["Memory"] == (LIMITS.memory_mb + 64) * 2**20
        writable = {m["Destination"] for m in mounts if m["RW"]}
        assert writable == {"/workspace", "/run/bastion-io"}  # + the pooled call's FIFOs
        assert set(host["Tmpfs"]) == {"/tmp", "/var/tmp"}
        assert not any("docker.sock" in m["Source"] for m in mounts)
        res = await box.run(["sh", "-c", "id -u; touch /etc/x; touch /workspace/ok && echo w"])
        assert res.stdout.split()[0] != "0" and "Read-only file system" in res.stderr
        assert res.stdout.split()[-1] == "w"
        await box.drain()
    finally:
        box.close()


def test_a_daemon_that_is_down_is_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                        fresh_probe: None, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nobody-home.sock")
    t0 = time.monotonic()
    box, problem = create_sandbox("docker", tmp_path, LIMITS)
    assert box is None and problem is not None
    assert time.monotonic() - t0 < 10
    assert "\n" not in problem and "not reachable" in problem, problem
    assert "(fix: start dockerd listening there, or correct DOCKER_HOST)" in problem
    info = DockerSandbox.info()
    assert info.problem is not None and "not reachable" in info.problem


def test_a_silent_daemon_never_hangs(monkeypatch: pytest.MonkeyPatch, fresh_probe: None,
                                     tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(8)  # accepts, never answers
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.setattr(docker, "DAEMON_TIMEOUT_S", 1.0)
    try:
        t0 = time.monotonic()
        problem = DockerSandbox.available()
        assert time.monotonic() - t0 < 5
        assert problem is not None and "does not answer within 1 s" in problem, problem
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


async def test_a_daemon_gone_mid_session_fails_the_call_at_once(workspace: Path,
                                                               tmp_path: Path) -> None:
    box, problem = create_sandbox("docker", workspace, LIMITS)
    assert isinstance(box, DockerSandbox), problem
    box.cli = [box.cli[0], "-H", f"unix://{tmp_path}/gone.sock"]  # as if dockerd had stopped
    t0 = time.monotonic()
    res = await asyncio.wait_for(box.run(["true"]), 15)
    assert time.monotonic() - t0 < 10
    assert res.exit_code != 0 and "Cannot connect to the Docker daemon" in res.stderr


def test_doctor_and_status_report_engine_version_and_mode(
        capsys: pytest.CaptureFixture[str]) -> None:
    from bastion.cli._doctor import check_engines
    from bastion.cli.sandbox import status

    server = subprocess.run([docker.docker_cli() or "docker", "-H", os.environ["DOCKER_HOST"],
                             "version", "--format", "{{.Server.Version}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    info = DockerSandbox.info()
    assert (info.version, info.rootless, info.userns_remap) == (server, False, False)
    assert info.client == "/usr/bin/docker"  # the daemon's own client, not another on PATH
    config = Config.model_validate({"security": {"sandbox": "docker"}})
    [check] = check_engines(config)  # a root daemon without remapping: say so, and the fix
    assert check.status == "WARN" and server in check.detail
    assert "root without user-namespace remapping" in check.detail
    assert check.fix == REMAP_FIX and '{"userns-remap": "default"}' in check.fix
    status(as_json=True)
    engines = json.loads(capsys.readouterr().out)["engines"]
    assert engines["docker"]["version"] == server
    assert engines["docker"]["rootless"] is False and engines["docker"]["userns_remap"] is False


@pytest.fixture
def remapped(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> str:
    """The tests' second daemon, with ``--userns-remap default``, as DOCKER_HOST."""
    problem = ensure("remap")
    if problem is not None and not os.environ.get("CI"):
        pytest.skip(problem)
    assert problem is None, problem
    monkeypatch.setenv("DOCKER_HOST", address("remap"))
    return address("remap")


async def test_a_remapped_daemon_is_detected_and_owns_writes_as_shifted_ids(
        remapped: str, workspace: Path) -> None:
    from bastion.cli._doctor import check_engines

    info = DockerSandbox.info()
    assert info.userns_remap is True and info.rootless is False
    [check] = check_engines(Config.model_validate({"security": {"sandbox": "docker"}}))
    assert check.status == "OK" and "user namespaces remapped" in check.detail
    box, problem = create_sandbox("docker", workspace, LIMITS, warm=1)
    assert isinstance(box, DockerSandbox) and box.warm_pool is not None, problem
    try:
        assert box._remap is not None
        cold = await box.run(["sh", "-c", "id -u; echo cold > cold.txt"])
        await box.warm_pool.fill()
        warm = await box.run(["sh", "-c", "id -u; echo warm > warm.txt"])
        await box.drain()
    finally:
        box.close()
    assert cold.stdout.split() == warm.stdout.split() == [str(box.uid)], (cold, warm)
    base_uid, base_gid = box._remap
    # on the host: the shifted sandbox account, never root, never an unshifted uid
    owners = {p.name: p.stat().st_uid for p in workspace.iterdir()}
    assert owners == {"cold.txt": base_uid + box.uid, "warm.txt": base_uid + box.uid}
    assert box.host_ids == (base_uid + box.uid, base_gid + box.gid)
    net = NetworkPolicy(enabled=True, netns_path="/run/netns/none-such")
    refused, problem = build_sandbox("docker", SandboxSpec(workspace, network=net))
    assert refused is None and problem is not None and "userns-remap" in problem, problem


async def test_a_daemon_that_freezes_mid_call_never_hangs_the_call(
        workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.security.sandbox import container

    monkeypatch.setattr(container, "REMOVE_TIMEOUT_S", 2.0)
    box, problem = create_sandbox("docker", workspace,
                                  LIMITS.model_copy(update={"wall_seconds": 3}))
    assert box is not None, problem
    pid = int((Path(address()[len("unix://"):]).parent / "dockerd.pid").read_text())
    call = asyncio.ensure_future(box.run(["sleep", "30"]))
    await asyncio.sleep(1.5)  # the container runs; now the daemon stops answering
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = await asyncio.wait_for(call, 20)
        assert time.monotonic() - t0 < 8  # wall (3 s) + the bounded removal (2 s)
        assert res.timed_out and res.killed_reason == "timeout"
    finally:
        os.kill(pid, signal.SIGCONT)


def test_build_image_for_docker_is_wired_to_the_engine(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    from bastion.cli.sandbox import build_image

    build_image(engine="docker")  # the tests' daemon has it: nothing to build or copy
    assert "already exists in docker" in capsys.readouterr().err
    with pytest.raises(SandboxError, match="unknown container engine"):
        build_image(engine="lxc")


async def test_per_tool_docker_beside_another_default(workspace: Path) -> None:
    from bastion.app import build_app
    from bastion.memory.base import EphemeralMemory
    from bastion.messages import ToolCall
    from bastion.testing import ScriptedModel

    config = Config.model_validate({"agent": {"workspace": str(workspace)},
                                    "security": {"sandbox": "bubblewrap",
                                                 "tool_sandboxes": {"shell": "docker"}}})
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    try:
        init = "tr '\\0' ' ' < /proc/1/cmdline"
        sh = await app.gateway.execute(ToolCall("shell", {"command": init}))
        py = await app.gateway.execute(ToolCall(
            "python", {"code": "print(open('/proc/1/cmdline').read().replace(chr(0), ' '))"}))
        assert "docker-init" in sh.text, sh.text  # shell: in a Docker container
        assert "docker-init" not in py.text and "bwrap" in py.text, py.text  # python: bwrap
    finally:
        await app.aclose()

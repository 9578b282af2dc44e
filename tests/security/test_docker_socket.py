"""The Docker socket is root on the host: no sandbox may reach it, no configuration may mount it.

The attack, on the real docker engine (the tests' own daemon, tests/_dockerd.py): sandboxed code
tries every place the socket lives (the default paths, the daemon's actual socket, a link to
it planted in the workspace, containerd's); and configurations try to bind it in (as the
workspace, as a read-only mount of a sandboxed command, as an MCP server's ``mounts``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.config.model import Config, LimitsConfig, McpServerConfig
from bastion.errors import SandboxError
from bastion.security.sandbox.factory import create_sandbox
from tests._dockerd import needs_backend

pytestmark = [pytest.mark.needs_root, needs_backend("docker")]
LIMITS = LimitsConfig(wall_seconds=20, cpu_seconds=5, memory_mb=256, max_processes=32)


def _socket_path() -> str:
    return os.environ["DOCKER_HOST"].removeprefix("unix://")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "workspace"
    ws.mkdir()
    return ws


async def test_the_docker_socket_is_never_reachable_inside(workspace: Path) -> None:
    sock = _socket_path()
    (workspace / "sock-link").symlink_to(sock)  # a link in the workspace points nowhere inside
    box, problem = create_sandbox("docker", workspace, LIMITS)
    assert box is not None, problem
    code = ("import socket\n"
            f"for p in ['/var/run/docker.sock', '/run/docker.sock', {sock!r}, 'sock-link',\n"
            "          '/run/containerd/containerd.sock']:\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            "    try:\n        s.connect(p); print('REACHED', p)\n"
            "    except OSError as e: print('no', p, type(e).__name__)\n")
    res = await box.run(["python3", "-c", code])
    assert "REACHED" not in res.stdout and res.stdout.count("no ") == 5, res.stdout + res.stderr


def test_a_config_that_would_mount_the_docker_socket_is_refused(tmp_path: Path) -> None:
    from bastion.mcp.mount import server_spec

    sock_dir = Path(_socket_path()).parent
    box, problem = create_sandbox("docker", sock_dir, LIMITS)  # the socket's dir as workspace
    assert box is None and problem is not None and "refusing" in problem and "fix:" in problem
    ws = tmp_path / "ws"
    ws.mkdir()
    good, problem = create_sandbox("docker", ws, LIMITS)
    assert good is not None, problem
    for mount in (Path(_socket_path()), sock_dir, Path("/var/run"), Path("/run")):
        with pytest.raises(SandboxError, match="refusing"):
            good.command(["true"], ro_paths=[mount])
    config = Config.model_validate({"security": {"sandbox": "docker"}})
    server = McpServerConfig(name="leaky", command=["true"], mounts=[Path("/var/run")])
    with pytest.raises(SandboxError, match="docker.sock"):
        server_spec(server, config, [])

"""The escape suite, run against every sandbox backend available here.

Each attempt must fail inside the sandbox, leave the host unchanged and, when run through
the gateway, leave an audit record.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bastion.config.model import LimitsConfig
from bastion.messages import ToolCall
from bastion.security.audit import AuditLog, AuditStage
from bastion.security.gateway import Environment, Gateway
from bastion.security.sandbox.base import Sandbox
from bastion.security.sandbox.factory import backend_class, create_sandbox
from bastion.tools.builtin import builtin_tools
from bastion.tools.registry import ToolRegistry
from tests._dockerd import needs_backend
from tests.integration.sandbox.conftest import leftover_processes

BACKENDS = [pytest.param(kind, marks=needs_backend(kind, even_in_ci=True))
            for kind in ("bubblewrap", "gvisor", "podman", "docker")]
LIMITS = LimitsConfig(wall_seconds=20, cpu_seconds=1, memory_mb=256, max_processes=32,
                      file_size_mb=1, output_bytes=4096)


@pytest.fixture(params=BACKENDS)
def box(request: pytest.FixtureRequest, workspace: Path) -> Sandbox:
    sandbox, problem = create_sandbox(request.param, workspace, LIMITS)
    assert sandbox is not None, problem
    return sandbox


async def run(box: Sandbox, script: str, timeout_s: float | None = None) -> tuple[str, str]:
    res = await box.run(["/bin/sh", "-c", script], timeout_s=timeout_s)
    return res.stdout, res.stderr


def host_snapshot(*paths: Path) -> dict[str, bytes | None]:
    return {str(p): (p.read_bytes() if p.exists() else None) for p in paths}


async def test_filesystem_escapes(box: Sandbox, workspace: Path, tmp_path: Path,
                                  bastion_home: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret\n")
    cfg = bastion_home / "bastion.yaml"
    cfg.write_text("api:\n  token: tok-very-secret-123\n")
    (workspace / "link").symlink_to(secret)
    (workspace / "etc-link").symlink_to("/etc")
    before = host_snapshot(secret, cfg, Path("/etc/hostname"))
    script = "; ".join([
        f"cat {secret}", "cat link", f"cat {cfg}", "cat /etc/shadow", "cat etc-link/shadow",
        "ls /root/.ssh", "cat /proc/1/root/etc/shadow", "cat /proc/self/root/etc/shadow",
        "cat ../../host-secret.txt", "cat /workspace/../host-secret.txt",
        f"echo pwned > {secret}", "echo pwned > link", "echo pwned > /etc/hostname",
        "echo pwned > /usr/pwned", "echo pwned > /pwned",
    ])
    out, err = await run(box, script)
    assert "host secret" not in out and "tok-very-secret-123" not in out
    host_shadow = set(Path("/etc/shadow").read_text().splitlines())  # we are root in CI
    assert not host_shadow & set(out.splitlines())  # (a container image has its own)
    assert host_snapshot(secret, cfg, Path("/etc/hostname")) == before
    assert not Path("/usr/pwned").exists() and not Path("/pwned").exists()


async def test_network_to_a_loopback_service_and_dns(box: Sandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    code = (f"import socket\n"
            f"for target in [('127.0.0.1', {port}), ('10.0.0.1', 80)]:\n"
            f"    try:\n        socket.create_connection(target, timeout=2); print('CONNECTED')\n"
            f"    except OSError as e: print('blocked', e)\n"
            f"try:\n    socket.getaddrinfo('exfil-secret.example.com', 53); print('RESOLVED')\n"
            f"except OSError as e: print('dns blocked', e)\n")
    res = await box.run(["python3", "-c", code])
    assert "CONNECTED" not in res.stdout and "RESOLVED" not in res.stdout, res.stdout
    assert res.stdout.count("blocked") == 3, res.stdout + res.stderr
    with pytest.raises(BlockingIOError):
        server.accept()
    server.close()


async def test_resource_bombs(box: Sandbox, workspace: Path) -> None:
    # the wall limit (20 s) is far above the CPU budget (1 s): the CPU limit must be what binds
    spin = await box.run(["/bin/sh", "-c", "while :; do :; done"])
    assert spin.killed_reason == "cpu_time", (spin.killed_reason, spin.stderr)
    big = await box.run(["/bin/sh", "-c", "head -c 5000000 /dev/zero > big.bin"])
    assert big.killed_reason == "file_size"
    assert (workspace / "big.bin").stat().st_size <= 1024 * 1024
    mem = await box.run(["python3", "-c", "x = bytearray(1024 * 1024 * 1024)"])
    assert mem.exit_code != 0 and "MemoryError" in mem.stderr
    # gVisor's CPU budget covers its user-space kernel's work too (process creation is
    # costly there): give the fork bomb room so the process limit is what stops it
    roomy, problem = create_sandbox(box.name, workspace,
                                    LIMITS.model_copy(update={"cpu_seconds": 20}))
    assert roomy is not None, problem
    bomb = await roomy.run(["/bin/sh", "-c", "for i in $(seq 200); do sleep 29.183 & done"],
                           timeout_s=15)
    assert "Cannot fork" in bomb.stderr or "process limit" in bomb.stderr
    flood = await box.run(["/bin/sh", "-c", "yes"])
    assert flood.killed_reason == "output" and len(flood.stdout) <= 4096
    await asyncio.sleep(0.3)
    assert leftover_processes("29.183") == []


async def test_escape_attempts_through_the_gateway_are_audited(box: Sandbox, workspace: Path,
                                                               tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.db")
    gateway = Gateway(ToolRegistry(builtin_tools()), Environment(workspace, sandbox=box),
                      [AuditStage(audit)])
    res = await gateway.execute(ToolCall("shell", {"command": "cat /root/.ssh/id_rsa"}))
    # bwrap/gVisor: no /root at all; podman/docker: the image's /root, closed to the user
    assert "No such file" in res.text or "Permission denied" in res.text, res.text
    res = await gateway.execute(ToolCall("read_file", {"path": "../../etc/passwd"}))
    assert res.decision == "error" and "refused" in res.text
    events = audit.events()
    assert [(e.tool, e.decision) for e in events] == [("read_file", "error"),
                                                      ("shell", "allowed")]
    audit.close()


async def test_per_tool_backend(workspace: Path) -> None:
    from bastion.app import build_app
    from bastion.config.model import Config
    from bastion.memory.base import EphemeralMemory
    from bastion.testing import ScriptedModel

    if backend_class("gvisor").available() is not None:
        pytest.skip("gvisor unavailable")
    config = Config.model_validate({"agent": {"workspace": str(workspace)},
                                    "security": {"sandbox": "bubblewrap",
                                                 "tool_sandboxes": {"python": "gvisor"}}})
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    try:
        code = "print(open('/proc/version').read())"
        py = await app.gateway.execute(ToolCall("python", {"code": code}))
        sh = await app.gateway.execute(ToolCall("shell", {"command": "cat /proc/version"}))
        assert "gVisor" in py.text or "#1 SMP Sun Jan 10 15:06:54 PST 2016" in py.text, py.text
        assert py.text != sh.text  # shell still runs under bubblewrap (the host kernel)
    finally:
        await app.aclose()

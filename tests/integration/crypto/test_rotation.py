"""Secret rotation against a real OpenBao dev server and a real sops file; emergency
rotation stops a running bubblewrap sandbox that holds the old value."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from bastion.config.model import LimitsConfig
from bastion.errors import SecretError
from bastion.messages import ToolCall
from bastion.security.audit import AuditLog
from bastion.security.gateway import CallRequest, ToolResult
from bastion.security.redact import Redactor
from bastion.security.sandbox.factory import create_sandbox
from bastion.security.secrets.resolver import SecretResolver, SecretsStage
from bastion.security.secrets.rotation import Rotator
from bastion.security.secrets.sops import SopsBackend
from bastion.security.secrets.vault import VaultBackend
from bastion.tools.base import Risk
from tests.integration.security.conftest import Bao


def test_vault_zero_downtime_then_retire(openbao: Bao, tmp_path: Path) -> None:
    vault = VaultBackend(openbao.url, token=openbao.token)
    vault.put("rot/api", {"token": "old-token-1111", "user": "svc"})
    audit = AuditLog(tmp_path / "audit.db")
    resolver = SecretResolver({"vault": vault})
    rot = Rotator({"vault": vault}, tmp_path / "rotation.json", audit=audit, resolver=resolver)
    assert resolver.resolve("secret://vault/rot/api#token") == "old-token-1111"
    res = rot.rotate("vault", "rot/api", key="token", grace_s=60)
    new = resolver.resolve("secret://vault/rot/api#token")
    assert new != "old-token-1111" and len(new) >= 40  # the next read gets the new version
    assert resolver.resolve("secret://vault/rot/api#user") == "svc"  # other keys carried over
    assert res.old_version is not None and int(res.new_version) == int(res.old_version) + 1
    assert vault.get_version("rot/api", res.old_version)["token"] == "old-token-1111"  # grace
    assert [r.version for r in rot.pending()] == [res.old_version]
    assert rot.sweep() == []  # not due yet
    assert [r.version for r in rot.sweep(now=time.time() + 61)] == [res.old_version]
    with pytest.raises(SecretError, match="destroyed|no secret"):
        vault.get_version("rot/api", res.old_version)
    assert rot.pending() == []
    kinds = [e.kind for e in audit.events(limit=10)]
    assert "secret.rotation" in kinds and "secret.version_destroyed" in kinds
    assert "old-token-1111" not in str([e.to_dict() for e in audit.events(limit=10)])
    audit.close()


class _ShellTool:
    name = "shell"
    risk = Risk.HIGH
    sandboxed = True
    secrets = {"API_TOKEN": "secret://vault/rot/live#token"}


def test_emergency_rotation_stops_running_sandbox(openbao: Bao, tmp_path: Path) -> None:
    vault = VaultBackend(openbao.url, token=openbao.token)
    vault.put("rot/live", {"token": "leaked-token-2222"})
    ws = tmp_path / "ws"
    ws.mkdir()
    box, problem = create_sandbox("bubblewrap", ws, LimitsConfig(wall_seconds=60))
    if box is None:
        pytest.fail(f"bubblewrap is needed: {problem}")
    audit = AuditLog(tmp_path / "audit.db")
    redactor = Redactor()
    resolver = SecretResolver({"vault": vault}, redactor)
    stage = SecretsStage(resolver)
    rot = Rotator({"vault": vault}, tmp_path / "rotation.json", audit=audit, resolver=resolver)
    marker = f"{os.getpid()}{time.time_ns() % 10_000}"  # sleep 40.<marker> is unique

    async def tool(req: CallRequest) -> ToolResult:
        assert req.secrets["API_TOKEN"] == "leaked-token-2222"
        res = await box.run(["sh", "-c", f'echo "$API_TOKEN" > got; exec sleep 40.{marker}'],
                            env=req.secrets)
        return ToolResult(req.call.id, "shell", True, res.stdout, "allowed")

    async def scenario() -> tuple[ToolResult, int]:
        req = CallRequest(ToolCall("c1", "shell", {}), _ShellTool(), "s1", "agent",  # type: ignore[arg-type]
                          Risk.HIGH)
        call = asyncio.create_task(stage(req, tool))
        while not (ws / "got").exists():
            await asyncio.sleep(0.02)
        assert (ws / "got").read_text().strip() == "leaked-token-2222"
        for _ in range(200):
            if _running(marker):
                break
            await asyncio.sleep(0.02)
        assert _running(marker)
        res = await asyncio.to_thread(rot.rotate, "vault", "rot/live", key="token",
                                      emergency=True)
        return await asyncio.wait_for(call, 20), res.stopped_calls

    result, stopped = asyncio.run(scenario())
    assert stopped == 1
    assert result.decision == "denied" and "revoked by an emergency rotation" in result.text
    deadline = time.monotonic() + 10
    while _running(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(marker)  # the sandboxed process holding the old value is gone
    with pytest.raises(SecretError):
        vault.get_version("rot/live", "1")  # the leaked version is destroyed at once
    assert resolver.resolve("secret://vault/rot/live#token") != "leaked-token-2222"
    vault.put("rot/live", {"token": "leaked-token-2222"})  # someone writes it back ...
    with pytest.raises(SecretError, match="revoked"):
        resolver.resolve("secret://vault/rot/live#token")  # ... and it is refused
    assert redactor.text("x leaked-token-2222 y") != "x leaked-token-2222 y"
    crit = audit.events(kind="secret.rotation.emergency")
    assert crit and crit[0].risk == "critical" and crit[0].detail["stopped_calls"] == 1
    audit.close()


def _running(marker: str) -> bool:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd and b"sleep" in cmd and b"sh\x00-c" not in cmd:
            return True
    return False


def test_sops_rotation_keeps_then_destroys_previous(tmp_path: Path) -> None:
    sops = SopsBackend(tmp_path / "s.enc.yaml", tmp_path / "age.key")
    sops.put("db", {"password": "first-pass-3333", "user": "app"})
    rot = Rotator({"sops": sops}, tmp_path / "rotation.json")
    res = rot.rotate("sops", "db", key="password", value="second-pass-4444", grace_s=30)
    assert sops.get("db") == {"password": "second-pass-4444", "user": "app"}
    assert res.old_version is not None
    assert sops.get_version("db", res.old_version)["password"] == "first-pass-3333"
    side = tmp_path / "s.enc.yaml.previous"
    assert side.exists() and b"first-pass-3333" not in side.read_bytes()  # encrypted too
    rot.sweep(now=time.time() + 31)
    with pytest.raises(SecretError, match="gone"):
        sops.get_version("db", res.old_version)
    res2 = rot.rotate("sops", "db", key="password", emergency=True)
    assert res2.destroyed == [res2.old_version] and rot.pending() == []
    with pytest.raises(SecretError, match="gone"):
        sops.get_version("db", str(res2.old_version))
    with pytest.raises(SecretError, match="cannot rotate"):
        from bastion.security.secrets.env import EnvBackend

        Rotator({"env": EnvBackend()}, tmp_path / "r.json").rotate("env", "x")

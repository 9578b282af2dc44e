"""doctor's container-engine line: what each daemon mode means and the fix (logic only).

The real daemon's answers are tested in tests/integration/sandbox/test_docker.py (a remapped
daemon); here the modes a test machine does not run at once: rootful without remapping,
rootless, and a daemon that is down.
"""

from __future__ import annotations

import pytest

from bastion.cli import _doctor
from bastion.config.model import Config
from bastion.security.sandbox import factory
from bastion.security.sandbox.container import EngineInfo
from bastion.security.sandbox.docker import REMAP_FIX


@pytest.mark.parametrize(("info", "status", "words"), [
    (EngineInfo("docker", "/usr/bin/docker", "20.10.24", rootless=False, userns_remap=False),
     "WARN", "runs as root without user-namespace remapping"),
    (EngineInfo("docker", "/usr/bin/docker", "20.10.24", rootless=True, userns_remap=False),
     "OK", "docker 20.10.24 (rootless"),
    (EngineInfo("docker", "/usr/bin/docker", "20.10.24", rootless=False, userns_remap=True),
     "OK", "rootful, user namespaces remapped"),
    (EngineInfo("docker", "/usr/bin/docker", problem="the Docker daemon at unix:///x is not "
                "reachable: down (fix: start it)"), "FAIL", "not reachable"),
])
def test_engine_check_per_daemon_mode(monkeypatch: pytest.MonkeyPatch, info: EngineInfo,
                                      status: str, words: str) -> None:
    monkeypatch.setattr(factory, "engine_report", lambda engines: [info])
    config = Config.model_validate({"security": {"tool_sandboxes": {"shell": "docker"}}})
    [check] = _doctor.check_engines(config)
    assert check.status == status and words in check.detail, check
    if status == "WARN":
        assert check.fix == REMAP_FIX and '{"userns-remap": "default"}' in check.fix
    if status == "FAIL":
        assert check.fix == "start it"


def test_no_engine_line_without_a_container_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "engine_report", lambda engines: pytest.fail("asked"))
    assert _doctor.check_engines(Config.model_validate({})) == []

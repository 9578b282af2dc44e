"""doctor's container-engine line and how a daemon's mode is read (logic only).

The real daemon's answers are tested in tests/integration/sandbox/test_docker.py (a remapped
daemon); here the modes a test machine does not run at once: rootful without remapping,
rootless, and a daemon that is down.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.cli import _doctor
from bastion.config.model import Config
from bastion.security.sandbox import factory
from bastion.security.sandbox.container import EngineInfo
from bastion.security.sandbox.docker import REMAP_FIX, DockerSandbox, _remap_base


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


@pytest.mark.parametrize(("options", "root_dir", "rootless", "remap"), [
    (["name=seccomp,profile=default", "name=rootless", "name=cgroupns"],
     "/home/u/.local/share/docker", True, False),
    (["name=seccomp,profile=default", "name=userns"], "/var/lib/docker/100000.100000",
     False, True),
    (["name=seccomp,profile=default"], "/var/lib/docker", False, False),
])
def test_rootless_and_remapping_are_read_from_docker_info(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, options: list[str], root_dir: str,
        rootless: bool, remap: bool) -> None:
    # a stand-in client that answers `docker info --format '{{json .}}'` as a daemon would
    fake = tmp_path / "docker"
    answer = json.dumps({"ServerVersion": "27.1.0", "SecurityOptions": options,
                         "DockerRootDir": root_dir})
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{answer}\nEOF\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BASTION_DOCKER_CLI", str(fake))
    info = DockerSandbox.info()
    assert (info.version, info.rootless, info.userns_remap, info.client) == (
        "27.1.0", rootless, remap, str(fake))
    assert _remap_base(root_dir) == ((100000, 100000) if remap else None)

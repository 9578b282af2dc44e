"""The podman engine of the container backend (see :mod:`.container` for what a call does).

podman specifics: the runc runtime (crun fails on this kind of host's cgroups/rlimits),
catatonit as init, ``nosuid,nodev`` on the workspace bind, ``--network ns:PATH`` to join an
egress namespace, and ``rm -f -t 0`` (without ``-t 0`` podman waits 10 s for a stop).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from bastion.security.sandbox.base import CA_BUNDLE
from bastion.security.sandbox.container import (
    BUILD_HINT,
    IMAGE,
    WARM_PREFIX,
    WARM_WAITER,
    ContainerSandbox,
    EngineInfo,
    image_exists,
)
from bastion.security.sandbox.container import build_image as _build_image

__all__ = ["BUILD_HINT", "IMAGE", "INSTALL_HINT", "WARM_PREFIX", "WARM_WAITER", "PodmanSandbox",
           "build_image", "image_exists"]

INSTALL_HINT = "apt-get install podman runc catatonit debootstrap"


def build_image(workdir: Path, *, mirror: str = "http://deb.debian.org/debian") -> str:
    """Build the sandbox image with debootstrap + podman import; returns the image name."""
    return _build_image(workdir, cli=("podman",), mirror=mirror, install_hint=INSTALL_HINT)


class PodmanSandbox(ContainerSandbox):
    """The container backend on podman."""

    name = "podman"
    engine = "podman"
    install_hint = INSTALL_HINT
    workspace_opts = "nosuid,nodev"
    rm_args = ("rm", "-f", "-t", "0")
    run_args = ("--runtime", "runc")

    @property
    def podman(self) -> str:
        """The podman client binary."""
        return self.cli[0]

    @classmethod
    def _engine_problem(cls, cli: list[str]) -> str | None:
        if shutil.which("runc") is None:
            return f"podman/runc are not installed (fix: {INSTALL_HINT})"
        return None

    @classmethod
    def info(cls) -> EngineInfo:
        """Return podman's version and whether it runs rootless."""
        exe = cls.find_cli()
        if exe is None:
            return EngineInfo("podman", problem=f"not installed (fix: {INSTALL_HINT})")
        try:
            proc = subprocess.run([exe, "info", "--format", "json"], capture_output=True,
                                  text=True, timeout=20)
            data = json.loads(proc.stdout) if proc.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            return EngineInfo("podman", exe, problem=f"podman info failed: {exc}")
        if not isinstance(data, dict):
            return EngineInfo("podman", exe, problem=f"podman info failed: {proc.stderr[-200:]}")
        host = data.get("host", {})
        security = host.get("security", {}) if isinstance(host, dict) else {}
        version = data.get("version", {})
        return EngineInfo("podman", exe,
                          version=version.get("Version") if isinstance(version, dict) else None,
                          rootless=bool(security.get("rootless")),
                          userns_remap=bool(host.get("idMappings", {}).get("uidmap")))

    def _network_args(self) -> list[str]:
        net = self.spec.network
        if not net.enabled:
            return ["--network", "none", "--hostname", self.hostname]
        args = ["--network", f"ns:{net.netns_path}", "--hostname", self.hostname]
        if net.resolv_conf is not None:  # its nftables + resolver apply
            args += ["-v", f"{net.resolv_conf}:/etc/resolv.conf:ro"]
        if net.ca_bundle is not None:
            args += ["-v", f"{net.ca_bundle}:{CA_BUNDLE}:ro"]
        return args

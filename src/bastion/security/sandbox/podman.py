"""The podman backend: one short-lived container per call from a locally built image.

There is no registry here, so the image is built on the machine: ``bastion sandbox
build-image`` runs ``debootstrap --variant=minbase --include=python3-minimal bookworm`` and
imports the tree with ``podman import`` as ``localhost/bastion-sandbox:bookworm`` (once; it is
cached). A user with a registry can instead ``podman pull`` any Debian-based image that has
``python3`` and tag it with that name.

Each call: ``podman run --rm`` with the runc runtime (crun fails on this kind of host's
cgroups/rlimits), a read-only root, tmpfs ``/tmp``, the workspace at ``/workspace``, no
network, every capability dropped, ``no-new-privileges``, the workspace owner's uid, rlimits
(prlimit inside: CPU, address space, processes, file size), a pids cgroup (which also binds
uid 0), a memory cgroup, and a wall-clock deadline after which the container is removed by
force.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from bastion.errors import SandboxError
from bastion.security.sandbox._proc import run_tree
from bastion.security.sandbox.base import WORKSPACE_MOUNT, Limits, ProbedBackend, SandboxSpec
from bastion.tools.base import ProcessResult

IMAGE = "localhost/bastion-sandbox:bookworm"
INSTALL_HINT = "apt-get install podman runc debootstrap"
BUILD_HINT = "bastion sandbox build-image"



def image_exists(podman: str = "podman") -> bool:
    """Return whether the sandbox image is in local storage."""
    proc = subprocess.run([podman, "image", "exists", IMAGE], capture_output=True, timeout=30)
    return proc.returncode == 0


def build_image(workdir: Path, *, mirror: str = "http://deb.debian.org/debian") -> str:
    """Build the sandbox image with debootstrap + podman import; returns the image name."""
    for exe in ("podman", "debootstrap"):
        if shutil.which(exe) is None:
            raise SandboxError(f"{exe} is not installed", fix=INSTALL_HINT)
    root = workdir / "rootfs"
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3-minimal", "bookworm", str(root),
         mirror], capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0:
        raise SandboxError(f"debootstrap failed: {proc.stderr.strip()[-300:]}",
                           fix="check the Debian mirror is reachable")
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imp = subprocess.run(["podman", "import", "-", IMAGE], stdin=tar.stdout,
                         capture_output=True, text=True, timeout=600)
    tar.wait()
    if imp.returncode != 0:
        raise SandboxError(f"podman import failed: {imp.stderr.strip()[-300:]}")
    return IMAGE


class PodmanSandbox(ProbedBackend):
    """A :class:`~bastion.security.sandbox.base.Sandbox` running each call in a container."""

    name = "podman"

    def __init__(self, spec: SandboxSpec, *, podman: str | None = None,
                 hostname: str = "sandbox") -> None:
        found = podman or shutil.which("podman")
        if not found:
            raise SandboxError("podman is not installed", fix=INSTALL_HINT)
        if spec.network.enabled:
            raise SandboxError("the podman backend has no egress control yet",
                               fix="use bubblewrap or gvisor for tools with egress")
        self.spec = spec
        self.podman = found
        self.hostname = hostname
        st = os.stat(spec.workspace)
        self.uid, self.gid = st.st_uid, st.st_gid

    @classmethod
    def _probe(cls) -> str | None:
        exe = shutil.which("podman")
        if exe is None or shutil.which("runc") is None:
            return f"podman/runc are not installed (fix: {INSTALL_HINT})"
        try:
            if not image_exists(exe):
                return f"the sandbox image {IMAGE} is not built (fix: {BUILD_HINT})"
            proc = subprocess.run(
                [exe, "run", "--rm", "--runtime", "runc", "--network", "none",
                 "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=64:64", IMAGE, "true"],
                capture_output=True, timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"podman does not start: {exc}"
        if proc.returncode != 0:
            why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            return f"podman cannot run a container here ({why[0]})"
        return None

    def _args(self, cid: str, argv: Sequence[str], env: Mapping[str, str], limits: Limits,
              ro_paths: Sequence[Path], interactive: bool) -> list[str]:
        from bastion.security.sandbox.bwrap import BubblewrapSandbox, limit_args

        args = [
            self.podman, "run", "--rm", "--name", cid, "--runtime", "runc",
            "--network", "none", "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,mode=1777",
            "--tmpfs", "/var/tmp:rw,nosuid,nodev,mode=1777",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", f"{self.uid}:{self.gid}", "--hostname", self.hostname,
            # rlimits are set inside by prlimit (podman has no address-space ulimit); the
            # pids cgroup caps processes even for uid 0, the memory cgroup is a backstop
            "--ulimit", "nofile=1024:1024",
            "--ulimit", "nproc=4096:4096",  # without it runc fails to apply podman's default
            "--pids-limit", str(limits.max_processes + 1),
            "--memory", f"{limits.memory_mb + 64}m",
            "-v", f"{self.spec.workspace}:{WORKSPACE_MOUNT}:rw", "-w", WORKSPACE_MOUNT,
            "--log-driver", "none",
        ]
        if interactive:
            args.append("-i")
        for path in ro_paths:
            host = str(Path(path).resolve())
            args += ["-v", f"{host}:{host}:ro"]
        for key, value in BubblewrapSandbox.environment(env).items():
            args += ["--env", f"{key}={value}"]
        return [*args, IMAGE, *limit_args(limits), *argv]

    def command(
        self,
        argv: list[str],
        limits: Limits | None = None,
        *,
        ro_paths: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Return a host command line that runs ``argv`` in a fresh container (stdin open)."""
        cid = "bastion-" + uuid.uuid4().hex[:12]
        return self._args(cid, argv, env or {}, limits or self.spec.limits, ro_paths, True)

    async def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> ProcessResult:
        """Run ``argv`` in a fresh container; it is force-removed afterwards in any case."""
        limits = self.spec.limits
        wall = limits.wall_seconds if timeout_s is None else min(timeout_s, limits.wall_seconds)
        cid = "bastion-" + uuid.uuid4().hex[:12]
        try:
            return await run_tree(
                self._args(cid, argv, env or {}, limits, (), stdin is not None),
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"},
                stdin=stdin, wall_seconds=wall, output_bytes=limits.output_bytes,
                label={"backend": self.name, "command": " ".join(argv)[:200],
                       "workspace": str(self.spec.workspace), "container": cid},
            )
        finally:
            with contextlib.suppress(OSError):
                proc = await asyncio.create_subprocess_exec(
                    self.podman, "rm", "-f", "-t", "0", cid,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )
                await proc.wait()

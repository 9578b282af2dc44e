"""The gVisor backend: ``runsc`` with an OCI bundle we write ourselves.

Not ``runsc do``: that runs on an overlay of the whole host root, which exposes home
directories and bastion's own config. The bundle's root is a small read-only directory with
the merged-usr links and a copied, secret-free ``/etc``; ``/usr`` is bind-mounted read-only,
the workspace read-write at ``/workspace``, ``/tmp`` is a tmpfs. The process has no
capabilities, no new privileges, its own pid/ipc/uts/mount namespaces, no network
(``--network=none``), and runs against gVisor's user-space kernel (``--platform=ptrace``;
``kvm`` hangs on many hosts). Limits are OCI rlimits enforced by the sentry (address space,
processes, file size, open files); the wall-clock deadline kills the container, and as the
sentry does not enforce ``RLIMIT_CPU`` (gVisor 2022), CPU time is bounded by the deadline.

The sandbox user is the workspace's owner (so writes land with the right owner); when
that is root, it is uid 0 *inside gVisor* with every capability dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bastion.errors import SandboxError
from bastion.security.sandbox._proc import run_tree
from bastion.security.sandbox.base import WORKSPACE_MOUNT, Limits, ProbedBackend, SandboxSpec
from bastion.security.sandbox.bwrap import _ETC, _SYSTEM_DIRS, _join_netns, _write_identity
from bastion.tools.base import ProcessResult

INSTALL_HINT = "apt-get install runsc"
_HOST_PIDS_MAX = 4096  # runsc's own threads count against a host pids cgroup


def _copy_etc(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in _ETC:
        src = Path("/etc") / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
            elif src.exists() or src.is_symlink():
                shutil.copy2(src, target, follow_symlinks=False)
        except OSError:
            continue


def _build_rootfs(root: Path, hostname: str) -> None:
    for name in ("proc", "dev", "tmp", "usr", WORKSPACE_MOUNT.strip("/"), "var/tmp"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in _SYSTEM_DIRS:
        host = Path("/") / name
        if name != "usr" and host.is_symlink():
            (root / name).symlink_to(os.readlink(host))
        elif name != "usr" and host.is_dir():
            (root / name).mkdir(exist_ok=True)
    _copy_etc(root / "etc")
    _write_identity(root / "etc", hostname)
    root.chmod(0o755)




_ROOTFS: dict[str, Path] = {}


def _shared_rootfs(hostname: str) -> Path:
    """Return the read-only root for ``hostname``: built once under bastion's home, then reused."""
    from bastion.config import paths

    if hostname in _ROOTFS:
        return _ROOTFS[hostname]
    root = paths.data_dir("sandbox") / f"gvisor-root-{hostname}"
    if not (root / ".complete").exists():
        staging = Path(tempfile.mkdtemp(prefix=".gvisor-root-", dir=root.parent))
        try:
            _build_rootfs(staging / "root", hostname)
            (staging / "root" / ".complete").touch()
            shutil.rmtree(root, ignore_errors=True)
            os.replace(staging / "root", root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _ROOTFS[hostname] = root
    return root


class GVisorSandbox(ProbedBackend):
    """A :class:`~bastion.security.sandbox.base.Sandbox` running commands under gVisor."""

    name = "gvisor"

    def __init__(self, spec: SandboxSpec, *, runsc: str | None = None,
                 hostname: str = "sandbox") -> None:
        found = runsc or shutil.which("runsc")
        if not found:
            raise SandboxError("gVisor (runsc) is not installed", fix=INSTALL_HINT)
        self.spec = spec
        self.runsc = found
        self.hostname = hostname
        self._state = Path(tempfile.mkdtemp(prefix="bastion-gvisor-"))
        self._state.chmod(0o755)
        self._runsc_root = self._state / "runsc"
        self._runsc_root.mkdir()
        self._rootfs = _shared_rootfs(hostname)
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._state, True)
        st = os.stat(spec.workspace)
        self.uid, self.gid = st.st_uid, st.st_gid

    @classmethod
    def _probe(cls) -> str | None:
        """Return ``None`` when runsc runs a command here, else why not (with the fix)."""
        exe = shutil.which("runsc")
        if exe is None:
            return f"gVisor is not installed (fix: {INSTALL_HINT})"
        with tempfile.TemporaryDirectory(prefix="bastion-gvisor-probe-") as tmp:
            try:
                proc = subprocess.run(
                    [exe, "--root", tmp, "--network=none", "--platform=ptrace", "do", "/bin/true"],
                    capture_output=True, timeout=20,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"runsc does not start: {exc}"
        if proc.returncode != 0:
            why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            return f"runsc cannot start a sandbox here ({why[0]})"
        return None

    def _oci(self, argv: Sequence[str], env: Mapping[str, str], limits: Limits,
             ro_paths: Sequence[Path]) -> dict[str, Any]:
        mb = 1024 * 1024

        def rl(kind: str, soft: int, hard: int | None = None) -> dict[str, Any]:
            return {"type": kind, "soft": soft, "hard": hard if hard is not None else soft}

        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": "/var/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
            {"destination": WORKSPACE_MOUNT, "type": "bind",
             "source": str(self.spec.workspace), "options": ["rbind", "rw"]},
        ]
        if self.spec.network.enabled and self.spec.network.resolv_conf is not None:
            mounts.append({"destination": "/etc/resolv.conf", "type": "bind",
                           "source": str(self.spec.network.resolv_conf),
                           "options": ["bind", "ro"]})
        for path in ro_paths:
            host = str(Path(path).resolve())
            mounts.append({"destination": host, "type": "bind", "source": host,
                           "options": ["rbind", "ro"]})
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": self.uid, "gid": self.gid},
                "args": list(argv),
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": WORKSPACE_MOUNT,
                "capabilities": {k: [] for k in
                                 ("bounding", "effective", "inheritable", "permitted", "ambient")},
                "rlimits": [
                    rl("RLIMIT_CPU", limits.cpu_seconds, limits.cpu_seconds + 1),
                    rl("RLIMIT_AS", limits.memory_mb * mb),
                    rl("RLIMIT_NPROC", limits.max_processes),
                    rl("RLIMIT_FSIZE", limits.file_size_mb * mb),
                    rl("RLIMIT_NOFILE", 1024),
                    rl("RLIMIT_CORE", 0),
                ],
                "noNewPrivileges": True,
            },
            "root": {"path": str(self._rootfs), "readonly": True},
            "hostname": self.hostname,
            "mounts": mounts,
            "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")
                                     + (() if self.spec.network.enabled else ("network",))]},
        }

    def _bundle(self, argv: Sequence[str], env: Mapping[str, str], limits: Limits,
                ro_paths: Sequence[Path]) -> tuple[str, Path]:
        cid = "bastion-" + uuid.uuid4().hex[:12]
        bundle = self._state / "bundles" / cid
        bundle.mkdir(parents=True)
        (bundle / "config.json").write_text(json.dumps(self._oci(argv, env, limits, ro_paths)))
        return cid, bundle

    def _runsc_args(self) -> list[str]:
        # With network, gVisor uses host sockets (--network=host) inside the egress namespace
        # nsenter put runsc in, so the namespace's nftables filter every packet; its own
        # netstack (--network=sandbox) would write raw frames that bypass them.
        network = "host" if self.spec.network.enabled else "none"
        args = [self.runsc, "--root", str(self._runsc_root), f"--network={network}",
                "--platform=ptrace"]
        return _join_netns(self.spec, args)

    def command(
        self,
        argv: list[str],
        limits: Limits | None = None,
        *,
        ro_paths: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Return a host command line that runs ``argv`` in a fresh gVisor container."""
        from bastion.security.sandbox.bwrap import BubblewrapSandbox

        full_env = BubblewrapSandbox.environment(env)
        cid, bundle = self._bundle(argv, full_env, limits or self.spec.limits, ro_paths)
        return [*self._runsc_args(), "run", "--bundle", str(bundle), cid]

    async def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> ProcessResult:
        """Run ``argv`` in a fresh gVisor container; removed afterwards whatever happens."""
        from bastion.security.sandbox.bwrap import BubblewrapSandbox

        limits = self.spec.limits
        wall = limits.wall_seconds if timeout_s is None else min(timeout_s, limits.wall_seconds)
        cid, bundle = self._bundle(argv, BubblewrapSandbox.environment(env), limits, ())
        try:
            return await run_tree(
                [*self._runsc_args(), "run", "--bundle", str(bundle), cid],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                stdin=stdin,
                wall_seconds=wall,
                output_bytes=limits.output_bytes,
                max_pids=_HOST_PIDS_MAX,
                label={"backend": self.name, "command": " ".join(argv)[:200],
                       "workspace": str(self.spec.workspace), "container": cid},
            )
        finally:
            await self._delete(cid)
            shutil.rmtree(bundle, ignore_errors=True)

    async def _delete(self, cid: str) -> None:
        import asyncio

        with contextlib.suppress(OSError):
            proc = await asyncio.create_subprocess_exec(
                self.runsc, "--root", str(self._runsc_root), "delete", "-force", cid,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            await proc.wait()

    def close(self) -> None:
        """Remove the bundle directory and runsc state."""
        self._finalizer()

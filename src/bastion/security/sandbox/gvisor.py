"""The gVisor backend: ``runsc`` with an OCI bundle we write ourselves.

Not ``runsc do``: that runs on an overlay of the whole host root, which exposes home
directories and bastion's own config. The bundle's root is a small read-only directory with
the merged-usr links and a copied, secret-free ``/etc``; ``/usr`` is bind-mounted read-only,
the workspace read-write at ``/workspace``, ``/tmp`` is a tmpfs. The process has no
capabilities, no new privileges, its own pid/ipc/uts/mount namespaces, no network
(``--network=none``), and runs against gVisor's user-space kernel (``--platform=ptrace``;
``kvm`` hangs on many hosts).

Limits: address space, processes, file size and open files are OCI rlimits enforced by the
sentry. The sentry accounts CPU time but does not enforce ``RLIMIT_CPU`` (gVisor 2022, as in
Debian 12), so bastion meters the CPU time of the whole sandbox on the host (a cgroup, see
:class:`~bastion.security.sandbox._cgroup.CpuMeter`) from the moment the command starts and
kills it as ``cpu_time`` when the budget is spent; gVisor's own boot is not charged. The
wall-clock deadline kills the container too.

``ls -l`` and ``stat``: that runsc rejects ``AT_NO_AUTOMOUNT`` in ``statx``/``newfstatat``
with ``EINVAL``, and coreutils 9 always passes it. The flag is meaningless inside the sandbox
(no automount points), so the root carries a tiny shim, preloaded through the root's own
``/etc/ld.so.preload``, that clears it; it is built once with the host C compiler. Where none
is installed, the self-check in :meth:`GVisorSandbox.available` fails and ``auto`` picks
bubblewrap.

Every run gets a fresh container: cold, one is started per call (with the waiter's handshake,
so the CPU meter starts when the command does); warm (``security.warm_pool``), containers
are started ahead with a waiter that execs the call's command, each serving one call,
so nothing a call leaves in ``/tmp`` or in memory reaches the next.

The sandbox user is the workspace's owner (so writes land with the right owner) when
bastion is not root; a root bastion runs it as the unprivileged ``bastion-sandbox`` account
and hands the workspace over to it (see ``_hostuser``), never as uid 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bastion import telemetry
from bastion.errors import SandboxError
from bastion.security.sandbox._hostuser import owner_ids
from bastion.security.sandbox._pool import WAITER, WarmPool, request_line
from bastion.security.sandbox._proc import Spawned, discard, drive, spawn
from bastion.security.sandbox.base import (
    CA_BUNDLE,
    WORKSPACE_MOUNT,
    Limits,
    SandboxBackend,
    SandboxSpec,
    control_entries,
)
from bastion.security.sandbox.bwrap import _ETC, _SYSTEM_DIRS, _join_netns, _write_identity
from bastion.telemetry.metrics import METRICS
from bastion.tools.base import ProcessResult

INSTALL_HINT = "apt-get install runsc"
SHIM_HINT = "apt-get install gcc libc6-dev"
_HOST_PIDS_MAX = 4096  # runsc's own threads count against a host pids cgroup
_ROOTFS_VERSION = "3"  # bump when the root's layout changes (rebuilt on mismatch)
_SHIM_PATH = "/.bastion/noautomount.so"  # inside the sandbox
_READY_TIMEOUT_S = 30.0  # a warm container's boot
# runsc creates mount points (e.g. of ro_paths) in the root with the umask it inherits;
# bastion's CLI runs with 077, and the sandbox user, not root, must be able to enter them
_RUNSC_UMASK = 0o022
_UMASK_022 = ["/bin/sh", "-c", 'umask 022 && exec "$@"', "sh"]
_ENV_FILE = "/tmp/.bastion-env"  # command()'s variables, sourced before the command
# The self-check: what coreutils does all day (statx with AT_NO_AUTOMOUNT) must work.
_SELF_CHECK = ("echo probe > /workspace/p && ls -l /workspace/p /usr >/dev/null && "
               "stat -c %s /workspace/p && find /workspace -name p")

_SHIM_SOURCE = r"""
/* bastion: clear AT_NO_AUTOMOUNT, which gVisor 2022 rejects with EINVAL (a no-op here). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifndef AT_NO_AUTOMOUNT
#define AT_NO_AUTOMOUNT 0x800
#endif
struct statx;
int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    return (int)syscall(SYS_statx, dirfd, path, flags & ~AT_NO_AUTOMOUNT, mask, buf);
}
int fstatat(int dirfd, const char *path, struct stat *buf, int flags) {
    return (int)syscall(SYS_newfstatat, dirfd, path, buf, flags & ~AT_NO_AUTOMOUNT);
}
int fstatat64(int dirfd, const char *path, struct stat64 *buf, int flags) {
    return (int)syscall(SYS_newfstatat, dirfd, path, buf, flags & ~AT_NO_AUTOMOUNT);
}
"""


def _cache_dir() -> Path | None:
    """Return the user's private cache directory for bastion (XDG), or None if unusable.

    Shared by every bastion home of this user: a self-check pass and the compiled shim
    depend on the machine, not on the home.
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bastion"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = base.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None  # someone else could plant a self-check pass or a library
    return base


@functools.cache
def _shim_library() -> bytes | None:
    """Return the compiled ``AT_NO_AUTOMOUNT`` shim (cached); None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    import hashlib

    cache = _cache_dir()
    digest = hashlib.sha256((_SHIM_SOURCE + cc + os.uname().machine).encode()).hexdigest()[:16]
    cached = cache / f"noautomount-{digest}.so" if cache is not None else None
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bastion-shim-") as tmp:
        src, out = Path(tmp) / "noautomount.c", Path(tmp) / "noautomount.so"
        src.write_text(_SHIM_SOURCE)
        try:
            proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(src)],
                                  capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0 or not out.exists():
            return None
        data = out.read_bytes()
    if cached is not None:
        with contextlib.suppress(OSError):
            tmp_file = cached.with_suffix(f".{os.getpid()}")
            tmp_file.write_bytes(data)
            os.replace(tmp_file, cached)
    return data


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


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
    shim = _shim_library()
    if shim is not None:
        lib = root / _SHIM_PATH.lstrip("/")
        lib.parent.mkdir(parents=True, exist_ok=True)
        lib.write_bytes(shim)
        lib.chmod(0o755)
        lib.parent.chmod(0o755)
        (root / "etc" / "ld.so.preload").write_text(_SHIM_PATH + "\n")
        (root / "etc" / "ld.so.preload").chmod(0o644)
    # every directory 0755 whatever the umask (bastion's CLI runs with 077): the sandbox
    # user is not root, and must be able to enter /etc, /etc/ssl, ...
    for path in (root, *root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    (root / ".complete").write_text(_ROOTFS_VERSION)


_ROOTFS: set[Path] = set()


def _ensure_rootfs(root: Path, hostname: str) -> Path:
    """Return ``root``, built (atomically) unless a current build is already there."""
    if root in _ROOTFS:
        return root
    marker = root / ".complete"
    if not (marker.exists() and marker.read_text() == _ROOTFS_VERSION):
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".gvisor-root-", dir=root.parent))
        try:
            _build_rootfs(staging / "root", hostname)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(staging / "root", root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _ROOTFS.add(root)
    return root


def _shared_rootfs(hostname: str) -> Path:
    """Return the read-only root for ``hostname``: built once under bastion's home, then reused."""
    from bastion.config import paths

    return _ensure_rootfs(paths.data_dir("sandbox") / f"gvisor-root-{hostname}", hostname)


class GVisorSandbox(SandboxBackend):
    """A :class:`~bastion.security.sandbox.base.Sandbox` running commands under gVisor.

    Args:
        spec: Workspace, limits and network policy.
        runsc: Path of the ``runsc`` binary (default: found on PATH).
        hostname: Host name inside the sandbox.
        warm: How many containers to keep started ahead (0: every call starts one).
        rootfs: Where the read-only root lives (default: under bastion's home).

    """

    name = "gvisor"

    def __init__(self, spec: SandboxSpec, *, runsc: str | None = None,
                 hostname: str = "sandbox", warm: int = 0, rootfs: Path | None = None) -> None:
        found = runsc or shutil.which("runsc")
        if not found:
            raise SandboxError("gVisor (runsc) is not installed", fix=INSTALL_HINT)
        self.spec = spec
        self.runsc = found
        self.hostname = hostname
        # 0700 (mkdtemp's mode): bundles hold the command line and environment
        self._state = Path(tempfile.mkdtemp(prefix="bastion-gvisor-"))
        self._runsc_root = self._state / "runsc"
        self._runsc_root.mkdir()
        self._rootfs = (_ensure_rootfs(rootfs, hostname) if rootfs is not None
                        else _shared_rootfs(hostname))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._state, True)
        # never root: the sandbox account when bastion is root (see _hostuser)
        self.uid, self.gid = owner_ids(spec.workspace)
        self._cleanups: set[threading.Thread] = set()
        self.warm_pool = WarmPool(warm, self._spawn_waiter) if warm else None

    @classmethod
    def _probe(cls) -> str | None:
        """Return ``None`` when runsc runs and passes the self-check here, else why not.

        A pass is remembered in the user's cache for this runsc binary, kernel, root layout
        and compiler, so later processes (every CLI command builds the app) skip the check.
        """
        exe = shutil.which("runsc")
        if exe is None:
            return f"gVisor is not installed (fix: {INSTALL_HINT})"
        st = os.stat(exe)
        key = (f"{exe} {st.st_size} {st.st_mtime_ns} {os.uname().release} {_ROOTFS_VERSION} "
               f"{shutil.which('cc') or shutil.which('gcc')}")
        cache = _cache_dir()
        memo = cache / "gvisor-self-check" if cache is not None else None
        if memo is not None:
            with contextlib.suppress(OSError):
                if memo.read_text() == key:
                    return None
        problem = cls._self_check(exe)
        if problem is None and memo is not None:
            with contextlib.suppress(OSError):
                memo.write_text(key)
        return problem

    @classmethod
    def _self_check(cls, exe: str) -> str | None:
        with tempfile.TemporaryDirectory(prefix="bastion-gvisor-probe-") as tmp:
            ws = Path(tmp) / "ws"
            ws.mkdir()
            try:
                box = cls(SandboxSpec(ws, Limits(wall_seconds=30)), runsc=exe,
                          rootfs=Path(tmp) / "root")
                # stdin: never the caller's (runsc makes its stdio non-blocking; an MCP
                # stdio server's own stdin would break)
                proc = subprocess.run(box.command(["/bin/sh", "-c", _SELF_CHECK]),
                                      capture_output=True, stdin=subprocess.DEVNULL, timeout=30,
                                      env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
                box.close()
            except (OSError, SandboxError, subprocess.TimeoutExpired) as exc:
                return f"runsc does not start: {exc}"
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        if proc.stdout.decode(errors="replace").split() == ["6", "/workspace/p"]:
            return None
        if any("statx" in line or "cannot access" in line for line in err):
            why = "runsc starts, but stat/ls fail inside it (statx AT_NO_AUTOMOUNT)"
            if _shim_library() is None:
                return f"{why}: no C compiler to build bastion's statx shim (fix: {SHIM_HINT})"
            return f"{why} ({err[-1]})"
        return f"runsc cannot start a sandbox here ({(err or ['?'])[-1]})"

    def _oci(self, argv: Sequence[str], env: Mapping[str, str], limits: Limits,
             ro_paths: Sequence[Path], env_file: Path | None = None) -> dict[str, Any]:
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
             "source": str(self.spec.workspace),
             "options": ["rbind", "rw", "nosuid", "nodev"]},
        ]
        for name in control_entries(self.spec.workspace):  # host-executed: read-only (F6)
            mounts.append({"destination": f"{WORKSPACE_MOUNT}/{name}", "type": "bind",
                           "source": str(self.spec.workspace / name),
                           "options": ["rbind", "ro", "nosuid", "nodev"]})
        if self.spec.network.enabled and self.spec.network.resolv_conf is not None:
            mounts.append({"destination": "/etc/resolv.conf", "type": "bind",
                           "source": str(self.spec.network.resolv_conf),
                           "options": ["bind", "ro"]})
        if self.spec.network.enabled and self.spec.network.ca_bundle is not None:
            mounts.append({"destination": CA_BUNDLE, "type": "bind",
                           "source": str(self.spec.network.ca_bundle), "options": ["bind", "ro"]})
        for path in ro_paths:
            host = str(Path(path).resolve())
            mounts.append({"destination": host, "type": "bind", "source": host,
                           "options": ["rbind", "ro"]})
        if env_file is not None:
            mounts.append({"destination": _ENV_FILE, "type": "bind", "source": str(env_file),
                           "options": ["bind", "ro"]})
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
                    # declared for programs that read it; the host CPU meter enforces it
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
                ro_paths: Sequence[Path], env_file: Path | None = None) -> tuple[str, Path]:
        cid = "bastion-" + uuid.uuid4().hex[:12]
        bundle = self._state / "bundles" / cid
        bundle.parent.mkdir(mode=0o700, exist_ok=True)
        bundle.mkdir(mode=0o700)
        _write_private(bundle / "config.json",
                       json.dumps(self._oci(argv, env, limits, ro_paths, env_file)).encode())
        return cid, bundle

    def _runsc_args(self) -> list[str]:
        # With network, gVisor uses host sockets (--network=host) inside the egress namespace
        # nsenter put runsc in, so the namespace's nftables filter every packet; its own
        # netstack (--network=sandbox) would write raw frames that bypass them.
        network = "host" if self.spec.network.enabled else "none"
        # --ignore-cgroups: runsc would move its sentry and gofer into cgroups of its own
        # (named after the container), out of the per-run pids cgroup and CPU meter.
        args = [self.runsc, "--root", str(self._runsc_root), f"--network={network}",
                "--platform=ptrace", "--ignore-cgroups"]
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

        base = BubblewrapSandbox.environment(None)
        full_env = BubblewrapSandbox.environment(env)
        extra = {k: v for k, v in full_env.items() if base.get(k) != v}
        if not extra:
            cid, bundle = self._bundle(argv, base, limits or self.spec.limits, ro_paths)
            return [*_UMASK_022, *self._runsc_args(), "run", "--bundle", str(bundle), cid]
        # The caller's variables stay out of config.json: a 0400 file of the sandbox's user
        # in the 0700 bundle directory, mounted read-only and sourced before the command.
        env_file = self._state / "bundles" / f"env-{uuid.uuid4().hex[:12]}"
        env_file.parent.mkdir(mode=0o700, exist_ok=True)
        _write_private(env_file, "".join(f"export {k}={shlex.quote(v)}\n"
                                         for k, v in extra.items()).encode(), 0o400)
        os.chown(env_file, self.uid, self.gid)
        wrapped = ["/bin/sh", "-c", f'. {_ENV_FILE} && exec "$@"', "sh", *argv]
        cid, bundle = self._bundle(wrapped, base, limits or self.spec.limits, ro_paths,
                                   env_file=env_file)
        return [*_UMASK_022, *self._runsc_args(), "run", "--bundle", str(bundle), cid]

    def launch_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """Return the environment for :meth:`command`'s command line (runsc's own)."""
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    async def _start(self, argv: Sequence[str], env: Mapping[str, str]
                     ) -> tuple[Spawned, str, Path]:
        """Start a container running ``argv`` (which first writes one NUL byte when up)."""
        cid, bundle = self._bundle(argv, env, self.spec.limits, ())
        try:
            spawned = await spawn([*self._runsc_args(), "run", "--bundle", str(bundle), cid],
                                  env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                  stdin_pipe=True, max_pids=_HOST_PIDS_MAX, cpu_meter=True,
                                  umask=_RUNSC_UMASK)
        except BaseException:
            self._forget(cid, bundle)
            raise
        spawned.tag = (cid, bundle)
        return spawned, cid, bundle

    async def _run(self, argv: list[str], warm: Spawned | None, stdin: bytes | None,
                   env: Mapping[str, str] | None, wall: float, before: set[str]
                   ) -> ProcessResult:
        """Run one call in a fresh (or pooled) gVisor container; removed whatever happens."""
        from bastion.security.sandbox.bwrap import BubblewrapSandbox

        start = time.perf_counter()
        limits = self.spec.limits
        full_env = BubblewrapSandbox.environment(env)
        label = {"backend": self.name, "command": " ".join(argv)[:200],
                 "workspace": str(self.spec.workspace)}
        if warm is not None:
            cid, bundle = warm.tag
            header = request_line(argv, full_env)
            label["warm"] = "yes"
        else:
            t0 = time.perf_counter()
            with telemetry.span("sandbox.start", {"bastion.sandbox.backend": self.name}):
                # the waiter says "up" (one NUL byte), then reads the command and its environment
                # from stdin: the variables never reach config.json
                warm, cid, bundle = await self._start(["python3", "-I", "-S", "-c", WAITER],
                                                      BubblewrapSandbox.environment(None))
                header = request_line(argv, full_env)
                try:  # the boot counts against the wall clock, not against the CPU budget
                    assert warm.proc.stdout is not None
                    await asyncio.wait_for(warm.proc.stdout.readexactly(1), wall)
                except asyncio.IncompleteReadError:
                    pass  # runsc failed to start the container: drive() reports its stderr
                except TimeoutError:
                    await discard(warm)
                    self._forget(cid, bundle)
                    return ProcessResult(exit_code=-9, stdout="", stderr="", timed_out=True,
                                         killed_reason="timeout", duration_ms=wall * 1000)
                except BaseException:
                    await discard(warm)
                    self._forget(cid, bundle)
                    raise
            METRICS.sandbox_start.observe(time.perf_counter() - t0, backend=self.name)
        label["container"] = cid
        try:
            result = await drive(warm, stdin=stdin,
                                 wall_seconds=max(wall - (time.perf_counter() - start), 0.01),
                                 output_bytes=limits.output_bytes, header=header, label=label,
                                 cpu_seconds=float(limits.cpu_seconds))
            return dataclasses.replace(result, duration_ms=(time.perf_counter() - start) * 1000)
        finally:
            self._forget(cid, bundle)

    async def _spawn_waiter(self) -> Spawned:
        from bastion.security.sandbox.bwrap import BubblewrapSandbox

        spawned, cid, bundle = await self._start(["python3", "-I", "-S", "-c", WAITER],
                                                 BubblewrapSandbox.environment(None))
        try:  # the waiter writes one NUL byte once it is up and reading
            assert spawned.proc.stdout is not None
            await asyncio.wait_for(spawned.proc.stdout.readexactly(1), _READY_TIMEOUT_S)
        except BaseException:
            await discard(spawned)
            self._forget(cid, bundle)
            raise
        return spawned

    def _forget(self, cid: str, bundle: Path) -> None:
        """Remove a finished container's runsc state and bundle, off the caller's path.

        A thread, not a task: a ``runsc delete`` subprocess still starting when the event
        loop closes would block its shutdown.
        """
        worker = threading.Thread(target=self._delete, args=(cid, bundle), daemon=True,
                                  name=f"gvisor-delete-{cid}")
        self._cleanups.add(worker)
        worker.start()

    def _delete(self, cid: str, bundle: Path) -> None:
        try:
            # `runsc run` removes its container when it exits; a killed one leaves state.
            if any(self._runsc_root.glob(f"*{cid}*")):
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    subprocess.run([self.runsc, "--root", str(self._runsc_root), "delete",
                                    "-force", cid], capture_output=True,
                                   stdin=subprocess.DEVNULL, timeout=30)
            shutil.rmtree(bundle, ignore_errors=True)
        finally:
            self._cleanups.discard(threading.current_thread())

    async def drain(self) -> None:
        """Wait until finished containers are deleted (their clean-up runs in threads)."""
        for worker in list(self._cleanups):
            await asyncio.to_thread(worker.join, 30)

    def close(self) -> None:
        """Kill the warm containers; remove the bundle directory and runsc state."""
        super().close()
        self._finalizer()

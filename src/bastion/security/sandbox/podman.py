"""The podman backend: one short-lived container per call from a locally built image.

There is no registry here, so the image is built on the machine: ``bastion sandbox
build-image`` runs ``debootstrap --variant=minbase --include=python3-minimal bookworm`` and
imports the tree with ``podman import`` as ``localhost/bastion-sandbox:bookworm`` (once; it is
cached). A user with a registry can instead ``podman pull`` any Debian-based image that has
``python3`` and tag it with that name.

Each call: ``podman run`` with the runc runtime (crun fails on this kind of host's
cgroups/rlimits), catatonit as init, a read-only root, tmpfs ``/tmp``, the workspace at
``/workspace``, no network, every capability dropped, ``no-new-privileges``, the workspace
owner's uid, rlimits (prlimit inside: CPU, address space, processes, file size), a pids
cgroup (which also binds uid 0), a memory cgroup, and a wall-clock deadline after which the
container is removed by force.

With egress declared, the container joins the tool's egress namespace (``--network
ns:/run/netns/bst-...``) and gets its resolver as ``/etc/resolv.conf``: the namespace's
nftables and dnsmasq then allow, refuse and audit exactly as for the other backends.

Warm pool (``security.warm_pool``): containers are started ahead of time, attached
(``podman run -i``), each running a tiny waiter under the same flags and limits (see
``WARM_WAITER``). A call writes one request to it; the waiter forks the command with its
stdin/stdout/stderr on FIFOs in a host directory bound into that container and writes the exit
status to a file there. So the call ends when the command ends -- not when podman has finished
reporting the container's exit, which costs about as much as a cold start. We chose this over
``podman run -d ... sleep infinity`` + ``podman exec``: an exec still pays for conmon and a
runc exec per call. Each pooled container serves exactly ONE call and is then removed (never
reset and reused): a reset could miss state (a background process, a file in /tmp or
/var/tmp, a changed rlimit), removal cannot. Only the workspace persists between calls -- as
it does for cold runs, by design.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from bastion.errors import SandboxError
from bastion.security.sandbox._fifo import FIFO_WAITER, IO_MOUNT, drive_fifos, make_io
from bastion.security.sandbox._hostuser import drop_to, owner_ids
from bastion.security.sandbox._pool import WarmPool, request_line
from bastion.security.sandbox._proc import Spawned, discard, run_tree, spawn
from bastion.security.sandbox.base import (
    WORKSPACE_MOUNT,
    Limits,
    ProbedBackend,
    SandboxSpec,
    control_entries,
    present_controls,
    quarantine_new_controls,
)
from bastion.tools.base import ProcessResult

IMAGE = "localhost/bastion-sandbox:bookworm"
INSTALL_HINT = "apt-get install podman runc catatonit debootstrap"
BUILD_HINT = "bastion sandbox build-image"
WARM_PREFIX = "bastion-warm-"  # + pid-hex: pooled containers (leftovers of dead pids removed)
_HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
_SWEPT = False
_IO = IO_MOUNT  # in a pooled container: the FIFOs (a host dir, bound in)
WARM_WAITER = FIFO_WAITER


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
                 hostname: str = "sandbox", warm: int = 0) -> None:
        found = podman or shutil.which("podman")
        if not found:
            raise SandboxError("podman is not installed", fix=INSTALL_HINT)
        if spec.network.enabled and spec.network.netns_path is None:
            raise SandboxError("network access needs an egress-controlled namespace",
                               fix="declare the tool's egress under security.egress")
        self.spec = spec
        self.podman = found
        self.hostname = hostname
        # never root: the sandbox account when bastion is root (see _hostuser)
        self.uid, self.gid = owner_ids(spec.workspace)
        self._shared_uid = drop_to() is not None
        self._cids: dict[int, tuple[str, Path]] = {}  # podman client pid -> (container, io)
        self._removals: set[asyncio.Future[None]] = set()  # removals and reaps in flight
        self._used: dict[str, tuple[int, Path]] = {}  # served, not yet removed: client, io
        self.warm_pool = (WarmPool(warm, self._spawn_waiter, release=self._release)
                          if warm else None)
        if warm:
            _sweep_stale(found)

    @classmethod
    def _probe(cls) -> str | None:
        exe = shutil.which("podman")
        if exe is None or shutil.which("runc") is None:
            return f"podman/runc are not installed (fix: {INSTALL_HINT})"
        try:
            if not image_exists(exe):
                return f"the sandbox image {IMAGE} is not built (fix: {BUILD_HINT})"
            proc = subprocess.run(
                [exe, "run", "--rm", "--init", "--runtime", "runc", "--network", "none",
                 "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=64:64", IMAGE, "true"],
                capture_output=True, timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"podman does not start: {exc}"
        if proc.returncode != 0:
            why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            return f"podman cannot run a container here ({why[0]})"
        return None

    def _network_args(self) -> list[str]:
        net = self.spec.network
        if not net.enabled:
            return ["--network", "none"]
        args = ["--network", f"ns:{net.netns_path}"]  # its nftables + resolver apply
        if net.resolv_conf is not None:
            args += ["-v", f"{net.resolv_conf}:/etc/resolv.conf:ro"]
        return args

    def _args(self, cid: str, argv: Sequence[str], env: Mapping[str, str], limits: Limits,
              ro_paths: Sequence[Path], interactive: bool, *, rm: bool = True,
              io: Path | None = None) -> list[str]:
        from bastion.security.sandbox.bwrap import BubblewrapSandbox, limit_args

        args = [
            self.podman, "run", *(["--rm"] if rm else []), "--name", cid, "--runtime", "runc",
            # catatonit as PID 1: the command is an ordinary process, so SIGXCPU/SIGXFSZ end
            # it (PID 1 ignores signals it has no handler for) and its status says why
            "--init",
            *self._network_args(), "--read-only",
            "--tmpfs", "/tmp:rw,nosuid,nodev,mode=1777",
            "--tmpfs", "/var/tmp:rw,nosuid,nodev,mode=1777",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", f"{self.uid}:{self.gid}", "--hostname", self.hostname,
            # rlimits are set inside by prlimit (podman has no address-space ulimit); the
            # pids cgroup caps processes even for uid 0, the memory cgroup is a backstop
            "--ulimit", "nofile=1024:1024",
            "--ulimit", "nproc=4096:4096",  # without it runc fails to apply podman's default
            "--pids-limit", str(limits.max_processes + 1),
            "--memory", f"{limits.memory_mb + 64}m",
            "-v", f"{self.spec.workspace}:{WORKSPACE_MOUNT}:rw,nosuid,nodev",
            "-w", WORKSPACE_MOUNT,
            "--log-driver", "none",
        ]
        for name in control_entries(self.spec.workspace):  # host-executed: read-only (F6)
            args += ["-v", f"{self.spec.workspace / name}:{WORKSPACE_MOUNT}/{name}:ro"]
        if interactive:
            args.append("-i")
        if io is not None:
            args += ["-v", f"{io}:{_IO}:rw"]
        for path in ro_paths:
            host = str(Path(path).resolve())
            args += ["-v", f"{host}:{host}:ro"]
        base = BubblewrapSandbox.environment(None)
        for key, value in BubblewrapSandbox.environment(env).items():
            if base.get(key) == value or key in _HOST_ENV:
                args += ["--env", f"{key}={value}"]  # fixed, non-secret values
            else:  # the value comes from podman's own environment (see launch_env), never argv
                args += ["--env", key]
        # RLIMIT_NPROC counts every process of the host uid; the sandbox account is shared
        # by all sandboxes, so there the pids cgroup alone bounds the tree
        return [*args, IMAGE, *limit_args(limits, nproc=not self._shared_uid), *argv]

    def command(
        self,
        argv: list[str],
        limits: Limits | None = None,
        *,
        ro_paths: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Return a host command line that runs ``argv`` in a fresh container (stdin open).

        Start it with :meth:`launch_env`: the caller's values are taken from there.
        """
        cid = "bastion-" + uuid.uuid4().hex[:12]
        return self._args(cid, argv, env or {}, limits or self.spec.limits, ro_paths, True)

    @staticmethod
    def launch_env(env: Mapping[str, str] | None) -> dict[str, str]:
        """Return podman's environment for :meth:`command`: its own plus the caller's values."""
        return {**{k: v for k, v in (env or {}).items() if k not in _HOST_ENV}, **_HOST_ENV}

    async def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> ProcessResult:
        """Run ``argv`` in a fresh (or pre-started) container, force-removed afterwards."""
        limits = self.spec.limits
        wall = limits.wall_seconds if timeout_s is None else min(timeout_s, limits.wall_seconds)
        pool = self.warm_pool
        before = present_controls(self.spec.workspace)
        try:
            result = await self._run(argv, pool.take() if pool is not None else None, stdin,
                                     env, wall)
        finally:
            if pool is not None:
                pool.refill()  # after the call, not competing with it
        note = quarantine_new_controls(self.spec.workspace, before)
        return dataclasses.replace(result, stderr=result.stderr + note) if note else result

    async def _run(self, argv: list[str], warm: Spawned | None, stdin: bytes | None,
                   env: Mapping[str, str] | None, wall: float) -> ProcessResult:
        limits = self.spec.limits
        if warm is not None:
            cid, io = self._cids.pop(warm.proc.pid, ("", None))
            if io is not None:
                return await self._run_warm(warm, cid, io, argv, env, stdin, wall)
            await discard(warm)
            self._remove_later(cid)
        cid = "bastion-" + uuid.uuid4().hex[:12]
        try:
            return await run_tree(
                self._args(cid, argv, env or {}, limits, (), stdin is not None),
                env=self.launch_env(env),
                stdin=stdin, wall_seconds=wall, output_bytes=limits.output_bytes,
                label={"backend": self.name, "command": " ".join(argv)[:200],
                       "workspace": str(self.spec.workspace), "container": cid},
            )
        finally:
            await self._remove(cid)

    async def _remove(self, *cids: str) -> None:
        cids = tuple(c for c in cids if c)
        if not cids:
            return
        with contextlib.suppress(OSError):
            proc = await asyncio.create_subprocess_exec(
                self.podman, "rm", "-f", "-t", "0", *cids,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            await proc.wait()

    async def drain(self) -> None:
        """Wait until the containers of finished warm calls are removed."""
        while self._removals:
            await asyncio.gather(*self._removals, return_exceptions=True)

    def _remove_later(self, *cids: str) -> None:
        task = asyncio.ensure_future(self._remove(*cids))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _spawn_waiter(self) -> Spawned:
        """Start one pooled container (no ``--rm``: we remove it after its one call)."""
        cid = f"{WARM_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:10]}"
        io = make_io(f"{cid}-", self.uid, self.gid)
        argv = self._args(cid, ["python3", "-I", "-S", "-c", WARM_WAITER], {},
                          self.spec.limits, (), True, rm=False, io=io)
        try:
            spawned = await spawn(argv, env=_HOST_ENV, stdin_pipe=True)
        except BaseException:
            shutil.rmtree(io, ignore_errors=True)
            raise
        self._cids[spawned.proc.pid] = (cid, io)
        try:  # the waiter writes one NUL byte once it is up and reading
            assert spawned.proc.stdout is not None
            await asyncio.wait_for(spawned.proc.stdout.readexactly(1), 120)
        except BaseException:
            self._cids.pop(spawned.proc.pid, None)
            await discard(spawned)
            await self._remove(cid)
            shutil.rmtree(io, ignore_errors=True)
            raise
        return spawned

    async def _run_warm(self, warm: Spawned, cid: str, io: Path, argv: list[str],
                        env: Mapping[str, str] | None, stdin: bytes | None,
                        wall: float) -> ProcessResult:
        """Drive one call in a pooled container through its FIFOs (see ``_fifo``)."""
        from bastion.security.sandbox.bwrap import BubblewrapSandbox

        self._used[cid] = (warm.proc.pid, io)
        clean = False
        try:
            result, clean = await drive_fifos(
                warm, io, request_line(argv, BubblewrapSandbox.environment(env)), stdin,
                wall, self.spec.limits.output_bytes, lambda: self._remove(cid),
                {"backend": self.name, "command": " ".join(argv)[:200],
                 "workspace": str(self.spec.workspace), "container": cid, "warm": "yes"})
        finally:
            if not clean:
                await self._remove(cid)
            else:
                self._remove_later(cid)  # it has exited; dropping it is off the call's path
            self._reap_later(warm, cid, io)
        return result

    def _reap_later(self, warm: Spawned, cid: str, io: Path) -> None:
        async def reap() -> None:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(warm.proc.wait(), 60)
            if warm.proc.returncode is None:
                await discard(warm)
            shutil.rmtree(io, ignore_errors=True)
            self._used.pop(cid, None)

        task = asyncio.ensure_future(reap())
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    def _release(self, items: list[Spawned], final: bool) -> None:
        """Remove pooled containers the pool dropped; when it closes, every one it started.

        ``final`` (pool closing, maybe with no loop left to finish a task): synchronously,
        including containers still starting (their podman clients are killed first).
        """
        if not final:
            for item in items:
                cid, io = self._cids.pop(item.proc.pid, ("", None))
                if cid:
                    self._remove_later(cid)
                if io is not None:
                    shutil.rmtree(io, ignore_errors=True)
            return
        started, self._cids = self._cids, {}
        used, self._used = self._used, {}  # served, their removal maybe still in flight
        every = {**{c: (pid, io) for pid, (c, io) in started.items()}, **used}
        for pid, _ in every.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if every:
            subprocess.run([self.podman, "rm", "-f", "-t", "0", *every], capture_output=True,
                           timeout=60)
        for _, io in every.values():
            shutil.rmtree(io, ignore_errors=True)

    def close(self) -> None:
        """Remove the pooled containers (if any are waiting)."""
        if self.warm_pool is not None:
            self.warm_pool.shutdown()


def _sweep_stale(podman: str) -> None:
    """Remove pooled containers left by bastion processes that are gone (once per process)."""
    global _SWEPT
    if _SWEPT:
        return
    _SWEPT = True
    from bastion.security.egress.uplink import alive

    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run(
            [podman, "ps", "-a", "--filter", f"name=^{WARM_PREFIX}", "--format", "{{.Names}}"],
            capture_output=True, text=True, timeout=30,
        ).stdout.split()
        dead = []
        for name in out:
            pid = name[len(WARM_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not alive(int(pid)):
                dead.append(name)
        if dead:
            subprocess.run([podman, "rm", "-f", "-t", "0", *dead], capture_output=True,
                           timeout=60)
    for io in Path(tempfile.gettempdir()).glob(f"{WARM_PREFIX}*"):
        pid = io.name[len(WARM_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(io, ignore_errors=True)

"""The container backend: one short-lived container per call, on podman or Docker Engine.

One backend, two engines. podman (:mod:`.podman`) and Docker Engine (:mod:`.docker`) agree on
the ``run`` flags used here, so this module builds the command line, runs cold and warm calls
and removes the containers; an engine subclass supplies only what differs: its client (and
Docker's daemon address), extra run flags (podman: ``--runtime runc``), bind options, how a
container joins an egress namespace, how a container is removed at once, and what the engine
says about itself (version, rootless, user-namespace remapping).

There is no registry here, so the image is built on the machine: ``bastion sandbox
build-image`` runs ``debootstrap --variant=minbase --include=python3-minimal bookworm`` and
imports the tree with ``podman import`` / ``docker import`` as
``localhost/bastion-sandbox:bookworm`` (once; it is cached). A user with a registry can instead
pull any Debian-based image that has ``python3`` and ``prlimit`` and tag it with that name.

Each call: ``run`` with the engine's init as PID 1 (catatonit for podman, docker-init for
Docker), a read-only root, tmpfs ``/tmp``, the workspace at ``/workspace`` (the only writable
bind), no network, every capability dropped, ``no-new-privileges``, the workspace owner's uid
(never root: see ``_hostuser``), rlimits (prlimit inside: CPU, address space, processes, file
size), a pids cgroup (which also binds uid 0), a memory cgroup, and a wall-clock deadline after
which the container is removed by force. No bind may expose a container engine's API socket
(:func:`refuse_engine_sockets`): whoever reaches it is root on the host.

With egress declared, the container joins the tool's egress namespace and gets its resolver
as ``/etc/resolv.conf``: the namespace's nftables and dnsmasq then allow, refuse and audit
exactly as for the other backends.

Warm pool (``security.warm_pool``): containers are started ahead of time, attached
(``run -i``), each running a tiny waiter under the same flags and limits (see
``WARM_WAITER``). A call writes one request to it; the waiter forks the command with its
stdin/stdout/stderr on FIFOs in a host directory bound into that container and writes the exit
status to a file there. So the call ends when the command ends -- not when the engine has
finished reporting the container's exit, which costs about as much as a cold start. We chose
this over ``run -d ... sleep infinity`` + ``exec``: an exec still pays for the engine's
monitor and a runc exec per call. Each pooled container serves exactly ONE call and is then
removed (never reset and reused): a reset could miss state (a background process, a file in
/tmp or /var/tmp, a changed rlimit), removal cannot. Only the workspace persists between calls
-- as it does for cold runs, by design.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import SandboxError
from bastion.security.sandbox._fifo import FIFO_WAITER, IO_MOUNT, drive_fifos, make_io
from bastion.security.sandbox._hostuser import drop_to, owner_ids
from bastion.security.sandbox._pool import WarmPool, request_line
from bastion.security.sandbox._proc import Spawned, discard, run_tree, spawn
from bastion.security.sandbox.base import (
    WORKSPACE_MOUNT,
    Limits,
    SandboxBackend,
    SandboxSpec,
    control_entries,
)
from bastion.tools.base import ProcessResult

IMAGE = "localhost/bastion-sandbox:bookworm"
BUILD_HINT = "bastion sandbox build-image"
WARM_PREFIX = "bastion-warm-"  # + pid-hex: pooled containers (leftovers of dead pids removed)
HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
_SWEPT: set[str] = set()  # engines whose leftovers this process has removed
_IO = IO_MOUNT  # in a pooled container: the FIFOs (a host dir, bound in)
WARM_WAITER = FIFO_WAITER
REMOVE_TIMEOUT_S = 30.0  # how long ``rm -f`` of a finished call's container may take
#: The API sockets of container engines: whoever can reach one is root on the host.
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock",
                  "/run/containerd/containerd.sock", "/run/buildkit/buildkitd.sock")


def engine_sockets() -> list[str]:
    """Return the engine API sockets to keep out of sandboxes (with ``DOCKER_HOST``'s)."""
    found = []
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        found.append(host[len("unix://"):])
    found += ENGINE_SOCKETS
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:  # rootless Docker's and podman's sockets
        found += [f"{runtime}/docker.sock", f"{runtime}/podman/podman.sock"]
    return found


def refuse_engine_sockets(sources: Iterable[Path | str], sockets: Iterable[str] = ()) -> None:
    """Raise when a host path bound into a sandbox is, or contains, an engine API socket.

    Links are resolved on both sides, so ``/var/run`` (a link to ``/run``) or a link to the
    socket is caught too.
    """
    targets = list(dict.fromkeys(os.path.realpath(s) for s in (*sockets, *engine_sockets())))
    targets.sort(key=lambda s: not os.path.exists(s))  # name a socket that is there first
    for source in sources:
        real = os.path.realpath(source)
        for sock in targets:
            if sock == real or sock.startswith(real.rstrip("/") + "/"):
                raise SandboxError(
                    f"refusing to start a sandbox that would mount {source}: it exposes the "
                    f"container engine socket {sock} (whoever reaches it is root on the host)",
                    fix="remove that path from the workspace / mcp_servers.<name>.mounts")


@dataclass(slots=True, frozen=True)
class EngineInfo:
    """What a container engine says about itself (``doctor``, ``bastion sandbox status``)."""

    engine: str
    client: str | None = None  # the client binary used
    version: str | None = None  # the engine's (Docker: the daemon's) version
    rootless: bool | None = None
    userns_remap: bool | None = None
    problem: str | None = None  # why it cannot be asked (not installed, daemon down)

    def summary(self) -> str:
        """Return one line: engine, version, rootless / remapping."""
        if self.problem:
            return f"{self.engine}: {self.problem}"
        mode = ("rootless" if self.rootless else
                "rootful, user namespaces remapped" if self.userns_remap else
                "rootful, no user-namespace remapping")
        return f"{self.engine} {self.version or '?'} ({mode}; client {self.client})"


def image_exists(cli: str | Sequence[str] = "podman") -> bool:
    """Return whether the sandbox image is in the engine's local storage."""
    argv = [cli] if isinstance(cli, str) else list(cli)
    proc = subprocess.run([*argv, "image", "inspect", IMAGE], capture_output=True, timeout=30)
    return proc.returncode == 0


def build_image(workdir: Path, *, cli: Sequence[str] = ("podman",),
                mirror: str = "http://deb.debian.org/debian", install_hint: str = "") -> str:
    """Build the sandbox image with debootstrap + ``<engine> import``; return its name."""
    for exe in (cli[0], "debootstrap"):
        if shutil.which(exe) is None:
            raise SandboxError(f"{exe} is not installed", fix=install_hint or None)
    root = workdir / "rootfs"
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3-minimal", "bookworm", str(root),
         mirror], capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0:
        raise SandboxError(f"debootstrap failed: {proc.stderr.strip()[-300:]}",
                           fix="check the Debian mirror is reachable")
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imp = subprocess.run([*cli, "import", "-", IMAGE], stdin=tar.stdout,
                         capture_output=True, text=True, timeout=600)
    tar.wait()
    if imp.returncode != 0:
        raise SandboxError(f"{Path(cli[0]).name} import failed: {imp.stderr.strip()[-300:]}")
    return IMAGE


def copy_image(source: Sequence[str], target: Sequence[str]) -> str:
    """Copy the sandbox image from one engine's storage to another's (``save`` | ``load``).

    No second debootstrap: the image podman already has is the same one Docker needs.
    """
    save = subprocess.Popen([*source, "save", IMAGE], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    load = subprocess.run([*target, "load"], stdin=save.stdout, capture_output=True, text=True,
                          timeout=900)
    save.wait()
    if save.returncode != 0 or load.returncode != 0:
        raise SandboxError(f"copying {IMAGE} failed: {load.stderr.strip()[-300:]}",
                           fix=f"{BUILD_HINT} --force")
    return IMAGE


class ContainerSandbox(SandboxBackend):
    """A :class:`~bastion.security.sandbox.base.Sandbox` running each call in a container.

    Subclasses name the engine and supply what its CLI does differently.
    """

    name = "container"
    engine = ""  # the client's name on PATH
    install_hint = ""
    #: options of the workspace bind besides ``rw`` (podman: nosuid,nodev)
    workspace_opts = ""
    #: ``rm`` that kills and removes at once
    rm_args: tuple[str, ...] = ("rm", "-f")
    #: extra ``run`` flags of this engine
    run_args: tuple[str, ...] = ()

    def __init__(self, spec: SandboxSpec, *, cli: str | None = None,
                 hostname: str = "sandbox", warm: int = 0) -> None:
        found = cli or self.find_cli()
        if not found:
            raise SandboxError(f"{self.engine} is not installed", fix=self.install_hint)
        if spec.network.enabled and spec.network.netns_path is None:
            raise SandboxError("network access needs an egress-controlled namespace",
                               fix="declare the tool's egress under security.egress")
        sources: list[Path | str] = [spec.workspace]
        if spec.network.resolv_conf is not None:
            sources.append(spec.network.resolv_conf)
        refuse_engine_sockets(sources)
        self.spec = spec
        self.cli = [found, *self.client_args()]
        self.hostname = hostname
        # never root: the sandbox account when bastion is root (see _hostuser)
        self.uid, self.gid = owner_ids(spec.workspace)
        self.host_ids = (self.uid, self.gid)  # who that is on the host (differs when remapped)
        self._shared_uid = drop_to() is not None
        self._cids: dict[int, tuple[str, Path]] = {}  # client pid -> (container, io)
        self._removals: set[asyncio.Future[None]] = set()  # removals and reaps in flight
        self._used: dict[str, tuple[int, Path]] = {}  # served, not yet removed: client, io
        self.warm_pool = (WarmPool(warm, self._spawn_waiter, release=self._release)
                          if warm else None)
        if warm:
            self._sweep_stale()

    # -- what an engine supplies ------------------------------------------------------------

    @classmethod
    def find_cli(cls) -> str | None:
        """Return the engine's client binary, or None when it is not installed."""
        return shutil.which(cls.engine)

    @classmethod
    def client_args(cls) -> list[str]:
        """Return flags every client call needs (Docker: the daemon address)."""
        return []

    @classmethod
    def _engine_problem(cls, cli: list[str]) -> str | None:
        """Return why the engine cannot be used (missing helper, daemon down) or None."""
        return None

    @classmethod
    def info(cls) -> EngineInfo:
        """Return what the engine says about itself (never raises)."""
        return EngineInfo(cls.engine)

    def _network_args(self) -> list[str]:
        """Return the flags that put a container in its network (none, or the egress one)."""
        return ["--network", "none", "--hostname", self.hostname]

    # -- shared -----------------------------------------------------------------------------

    @classmethod
    def _probe(cls) -> str | None:
        exe = cls.find_cli()
        if exe is None:
            return f"{cls.engine} is not installed (fix: {cls.install_hint})"
        cli = [exe, *cls.client_args()]
        try:
            problem = cls._engine_problem(cli)
            if problem:
                return problem
            if not image_exists(cli):
                return (f"the sandbox image {IMAGE} is not built for {cls.engine} "
                        f"(fix: {BUILD_HINT} --engine {cls.engine})")
            proc = subprocess.run(
                [*cli, "run", "--rm", "--init", *cls.run_args, "--network", "none",
                 "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=64:64", IMAGE, "true"],
                capture_output=True, timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{cls.engine} does not start: {exc}"
        if proc.returncode != 0:
            why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            return f"{cls.engine} cannot run a container here ({why[0]})"
        return None

    def _args(self, cid: str, argv: Sequence[str], env: Mapping[str, str], limits: Limits,
              ro_paths: Sequence[Path], interactive: bool, *, rm: bool = True,
              io: Path | None = None) -> list[str]:
        from bastion.security.sandbox.bwrap import BubblewrapSandbox, limit_args

        refuse_engine_sockets(ro_paths)
        ws_opts = "rw" + (f",{self.workspace_opts}" if self.workspace_opts else "")
        args = [
            *self.cli, "run", *(["--rm"] if rm else []), "--name", cid, *self.run_args,
            # the engine's init as PID 1: the command is an ordinary process, so
            # SIGXCPU/SIGXFSZ end it (PID 1 ignores signals it has no handler for) and its
            # status says why
            "--init",
            *self._network_args(), "--read-only",
            "--tmpfs", "/tmp:rw,nosuid,nodev,mode=1777",
            "--tmpfs", "/var/tmp:rw,nosuid,nodev,mode=1777",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", f"{self.uid}:{self.gid}",
            # rlimits are set inside by prlimit (the engines have no address-space ulimit);
            # the pids cgroup caps processes even for uid 0, the memory cgroup is a backstop
            "--ulimit", "nofile=1024:1024",
            "--ulimit", "nproc=4096:4096",  # without it runc fails to apply podman's default
            "--pids-limit", str(limits.max_processes + 1),
            "--memory", f"{limits.memory_mb + 64}m",
            "-v", f"{self.spec.workspace}:{WORKSPACE_MOUNT}:{ws_opts}",
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
            if base.get(key) == value or key in HOST_ENV:
                args += ["--env", f"{key}={value}"]  # fixed, non-secret values
            else:  # the value comes from the client's own environment (launch_env), never argv
                args += ["--env", key]
        # RLIMIT_NPROC counts every process of the host uid; the sandbox account is shared
        # by all sandboxes, so there the pids cgroup alone bounds the tree
        return [*args, IMAGE, *limit_args(limits, nproc=not self._shared_uid), *argv]

    def command(self, argv: list[str], limits: Limits | None = None, *,
                ro_paths: Sequence[Path] = (), env: Mapping[str, str] | None = None
                ) -> list[str]:
        """Return a host command line that runs ``argv`` in a fresh container (stdin open).

        Start it with :meth:`launch_env`: the caller's values are taken from there.
        """
        cid = "bastion-" + uuid.uuid4().hex[:12]
        return self._args(cid, argv, env or {}, limits or self.spec.limits, ro_paths, True)

    @staticmethod
    def launch_env(env: Mapping[str, str] | None) -> dict[str, str]:
        """Return the client's environment for :meth:`command`: its own plus the caller's."""
        return {**{k: v for k, v in (env or {}).items() if k not in HOST_ENV}, **HOST_ENV}

    async def _run(self, argv: list[str], warm: Spawned | None, stdin: bytes | None,
                   env: Mapping[str, str] | None, wall: float, before: set[str]
                   ) -> ProcessResult:
        """Run one call in ``warm`` (a pooled container) or a fresh one, force-removed after."""
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
                *self.cli, *self.rm_args, *cids,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            try:  # a daemon that stopped answering must not hold the call (nor close) forever
                await asyncio.wait_for(proc.wait(), REMOVE_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
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
        io = make_io(f"{cid}-", *self.host_ids)
        argv = self._args(cid, ["python3", "-I", "-S", "-c", WARM_WAITER], {},
                          self.spec.limits, (), True, rm=False, io=io)
        try:
            spawned = await spawn(argv, env=HOST_ENV, stdin_pipe=True)
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
        including containers still starting (their clients are killed first).
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
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run([*self.cli, *self.rm_args, *every], capture_output=True,
                               timeout=REMOVE_TIMEOUT_S)
        for _, io in every.values():
            shutil.rmtree(io, ignore_errors=True)

    def _stale_prefixes(self) -> tuple[str, ...]:
        return (WARM_PREFIX,)

    def _sweep_stale(self) -> None:
        """Remove containers left by bastion processes that are gone (once per engine)."""
        if self.engine in _SWEPT:
            return
        _SWEPT.add(self.engine)
        from bastion.security.egress.uplink import alive

        def dead(name: str, prefix: str) -> bool:
            pid = name[len(prefix):].split("-", 1)[0]
            return pid.isdigit() and not alive(int(pid))

        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            gone = []
            for prefix in self._stale_prefixes():
                out = subprocess.run(
                    [*self.cli, "ps", "-a", "--filter", f"name=^{prefix}", "--format",
                     "{{.Names}}"], capture_output=True, text=True, timeout=30,
                ).stdout.split()
                gone += [name for name in out if dead(name, prefix)]
            if gone:
                subprocess.run([*self.cli, *self.rm_args, *gone], capture_output=True,
                               timeout=60)
        for io in Path(tempfile.gettempdir()).glob(f"{WARM_PREFIX}*"):
            if dead(io.name, WARM_PREFIX):
                shutil.rmtree(io, ignore_errors=True)

"""The bubblewrap sandbox backend (default on Linux).

What a sandboxed process sees and may do:

- a root made only of what programs need, read-only: ``/usr`` (with the merged-usr links
  ``/bin``, ``/lib*``, ``/sbin``) and a short list of ``/etc`` files. Never ``--ro-bind / /``:
  that would expose home directories, ``/etc/shadow`` and bastion's own config and token;
- generated ``/etc/passwd``, ``/etc/group`` and ``/etc/hosts`` naming only the sandbox user;
- the workspace read-write at ``/workspace`` (the working directory), a private ``/tmp``;
- new user, pid, ipc, uts, cgroup and network namespaces (no network at all), uid/gid 1000,
  every capability dropped, no new privileges, no nested user namespaces, its own session
  (no terminal injection), killed with its parent;
- a clean environment (only PATH, HOME, LANG, ... and what the caller passes; the variables are
  handed over through the exec environment, never on bwrap's argv, so they never show in
  ``ps``; :meth:`BubblewrapSandbox.command` callers start it with ``launch_env``);
- a seccomp filter (``_seccomp``: no io_uring, userfaultfd, keyctl, perf, bpf, mount,
  namespaces, setuid/setgid files), a size-capped ``/tmp`` and ``/var/tmp``;
- when bastion runs as root, bwrap itself runs as the unprivileged ``bastion-sandbox``
  account (``_hostuser``), so the sandbox's uid 1000 is that account on the host, never root;
- rlimits on CPU seconds, address space, processes, file size and open files, a pids cgroup
  where one is writable (``RLIMIT_NPROC`` does not bind host root), a wall-clock deadline that
  kills the whole tree, and a cap on captured output.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bastion.errors import SandboxError
from bastion.security.sandbox._fifo import FIFO_WAITER, IO_MOUNT, drive_fifos, make_io
from bastion.security.sandbox._hostuser import drop_to, hand_over
from bastion.security.sandbox._pool import WarmPool, request_line
from bastion.security.sandbox._proc import Spawned, discard, run_tree, spawn
from bastion.security.sandbox._seccomp import filter_file
from bastion.security.sandbox.base import (
    CA_BUNDLE,
    WORKSPACE_MOUNT,
    Limits,
    SandboxBackend,
    SandboxSpec,
    control_entries,
    quarantine_new_controls,
)
from bastion.tools.base import ProcessResult

INSTALL_HINT = "apt-get install bubblewrap"
SANDBOX_UID = 1000
SECCOMP_FD = 9
#: Where a root-run bastion stages bind sources for a bwrap that runs unprivileged: a tmpfs
#: mounted here in the launcher's private mount namespace (the host never sees it).
STAGE_DIR = Path("/run/bastion-sandbox")
# Every bwrap is started through this tiny sh launcher: $1 is the seccomp filter (opened on
# fd 9 for --seccomp), $2 the stage directory ("" when bwrap is started by bastion's own,
# unprivileged user); then host paths up to "--", each bind-mounted at $2/1, $2/2, ... in the
# private mount namespace `unshare` made; then the command. Staging is what lets a bwrap
# running as the unprivileged sandbox account bind sources under directories only root may
# enter (bastion's home, pytest's 0700 temporary directories).
LAUNCHER = (
    'f=$1 s=$2; shift 2\n'
    'if [ -n "$s" ]; then mount -t tmpfs -o mode=0755,size=64k bastion-stage "$s" || exit 125; fi\n'
    'n=0\n'
    'while [ "$1" != -- ]; do\n'
    '  n=$((n+1))\n'
    '  if [ -d "$1" ]; then mkdir "$s/$n"; else : >"$s/$n"; fi || exit 125\n'
    '  mount --bind "$1" "$s/$n" || exit 125\n'
    '  shift\n'
    'done\n'
    'shift\n'
    f'exec {SECCOMP_FD}<"$f" || exit 125\n'
    'exec "$@"\n'
)

# /etc entries programs commonly need; nothing with secrets (shadow, ssh, ssl/private, ...).
_ETC = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "nsswitch.conf",
    "host.conf", "gai.conf", "protocols", "services", "mime.types", "magic", "alternatives",
    "ca-certificates", "ssl/certs", "ssl/openssl.cnf", "python3", "python3.11", "python3.12",
    "python3.13", "debian_version", "os-release", "inputrc", "bash.bashrc", "profile",
)
_SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ENV_BASE = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}


def root_binds() -> list[str]:
    """Return the bwrap arguments that build the read-only system part of the root."""
    args: list[str] = []
    for name in _SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    for name in _ETC:
        host = Path("/etc") / name
        if host.exists():
            args += ["--ro-bind", str(host), f"/etc/{name}"]
    return args


def limit_args(limits: Limits, *, nproc: bool = True) -> list[str]:
    """Return the ``prlimit`` command prefix applying ``limits`` inside the sandbox."""
    mb = 1024 * 1024
    return [
        "/usr/bin/prlimit",
        # soft < hard: the soft limit delivers SIGXCPU, so the kill is reported as cpu_time
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
        f"--as={limits.memory_mb * mb}",
        *([f"--nproc={limits.max_processes}"] if nproc else []),
        f"--fsize={limits.file_size_mb * mb}",
        "--nofile=1024",
        "--core=0",
        "--",
    ]


def memory_bytes(limits: Limits) -> int:
    """Return the memory cap of a whole sandbox: the per-process limit, plus its /tmp."""
    # RLIMIT_AS bounds each process's address space; the cgroup bounds what the tree really
    # uses together (64 processes x RLIMIT_AS otherwise), /tmp's pages included
    return (limits.memory_mb + 2 * limits.tmp_mb + 32) * 1024 * 1024


_CLONE_NEWNS = 0x00020000
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18


def _stage_and_drop(sources: list[str], ids: tuple[int, int]) -> Callable[[], None]:
    """Return a preexec that does what LAUNCHER + setpriv do, in the forked child.

    A private mount namespace, the bind sources staged on a tmpfs at :data:`STAGE_DIR`,
    then no supplementary groups and the sandbox account's uid/gid. Everything it needs is
    prepared here, in the parent.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    stage = str(STAGE_DIR).encode()
    plan = [(src.encode(), f"{STAGE_DIR}/{n}".encode(), os.path.isdir(src))
            for n, src in enumerate(sources, 1)]
    uid, gid = ids

    def prepare() -> None:
        if (libc.unshare(_CLONE_NEWNS) != 0
                or libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0
                or libc.mount(b"bastion-stage", stage, b"tmpfs", 0,
                              b"mode=0755,size=64k") != 0):
            raise OSError(ctypes.get_errno(), "cannot stage the sandbox's bind sources")
        for src, dest, is_dir in plan:
            if is_dir:
                os.mkdir(dest)
            else:
                os.close(os.open(dest, os.O_WRONLY | os.O_CREAT, 0o644))
            if libc.mount(src, dest, None, _MS_BIND | _MS_REC, None) != 0:
                raise OSError(ctypes.get_errno(), "cannot bind a sandbox source")
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    return prepare


def _release_io(items: list[Spawned], final: bool) -> None:
    """Remove the FIFO directories of pooled waiters the pool threw away."""
    for item in items:
        if isinstance(item.tag, Path):
            shutil.rmtree(item.tag, ignore_errors=True)


def prepare_stage() -> None:
    """Create the (empty, root-owned) mount point for staged bind sources."""
    STAGE_DIR.mkdir(mode=0o755, exist_ok=True)
    st = os.lstat(STAGE_DIR)
    if not os.path.isdir(STAGE_DIR) or os.path.islink(STAGE_DIR) or st.st_uid != 0:
        raise SandboxError(f"{STAGE_DIR} is not a root-owned directory",
                           fix=f"rm -rf {STAGE_DIR} (bastion creates it again)")


def _join_netns(spec: SandboxSpec, cmd: list[str]) -> list[str]:
    """Prefix ``cmd`` with ``nsenter`` into the spec's egress namespace, if it has one."""
    path = spec.network.netns_path
    if spec.network.enabled and path is not None:
        return ["nsenter", f"--net={path}", "--", *cmd]
    return cmd


def identity_dir(hostname: str) -> Path:
    """Return the directory with the generated passwd/group/hosts for ``hostname``.

    Kept under bastion's home and shared by every sandbox (no temporary directory per
    instance that a killed process would leave behind); rewritten only when it differs.
    """
    from bastion.config import paths

    etc = paths.data_dir("sandbox") / f"etc-{hostname}"
    staging = Path(tempfile.mkdtemp(prefix=".etc-", dir=etc.parent))
    try:
        _write_identity(staging, hostname)
        etc.mkdir(exist_ok=True)
        etc.chmod(0o755)
        for name in ("passwd", "group", "hosts"):
            new = (staging / name).read_bytes()
            target = etc / name
            if not target.exists() or target.read_bytes() != new:
                os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return etc


def _write_identity(etc: Path, hostname: str) -> None:
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/tmp:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\nnogroup:x:65534:\n")
    (etc / "hosts").write_text(f"127.0.0.1 localhost {hostname}\n::1 localhost\n")
    for name in ("passwd", "group", "hosts"):
        (etc / name).chmod(0o644)




class BubblewrapSandbox(SandboxBackend):
    """A :class:`~bastion.security.sandbox.base.Sandbox` backed by ``bwrap``.

    Args:
        spec: Workspace, limits and network policy.
        bwrap: Path of the ``bwrap`` binary (default: found on PATH).
        hostname: Host name inside the sandbox.

    """

    name = "bubblewrap"

    def __init__(self, spec: SandboxSpec, *, bwrap: str | None = None,
                 hostname: str = "sandbox", warm: int = 0) -> None:
        found = bwrap or shutil.which("bwrap")
        if not found:
            raise SandboxError("bubblewrap is not installed", fix=INSTALL_HINT)
        self.spec = spec
        self.bwrap = found
        self.hostname = hostname
        self._drop = drop_to()
        if self._drop is not None:
            hand_over(spec.workspace, *self._drop)
            prepare_stage()
        self._etc = identity_dir(hostname)
        self._root = root_binds()
        seccomp = filter_file()
        if seccomp is None:
            raise SandboxError("libseccomp or its Python bindings are missing",
                               fix="apt-get install libseccomp2 && pip install pyseccomp")
        self._seccomp = seccomp
        self._flags()  # refuses a network policy without an egress namespace now
        self._teardowns: set[asyncio.Future[None]] = set()
        self.warm_pool = (WarmPool(warm, self._spawn_waiter, release=_release_io)
                          if warm else None)

    @classmethod
    def _probe(cls) -> str | None:
        """Return ``None`` when bwrap works here, else why not (with the install line)."""
        exe = shutil.which("bwrap")
        if exe is None:
            return f"bubblewrap is not installed (fix: {INSTALL_HINT})"
        try:
            import pyseccomp  # noqa: F401
        except (ImportError, OSError) as exc:
            return (f"the seccomp filter cannot be built ({exc}) "
                    "(fix: apt-get install libseccomp2 && pip install pyseccomp)")
        prefix: list[str] = []
        try:
            drop = drop_to()
        except SandboxError as exc:
            return exc.user_text()
        if drop is not None:  # root: bwrap runs as the sandbox account, so probe as it
            prefix = ["setpriv", f"--reuid={drop[0]}", f"--regid={drop[1]}", "--clear-groups",
                      "--"]
        try:
            proc = subprocess.run(
                [*prefix, exe, "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
                 "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                 "--unshare-all", "--unshare-user", "--die-with-parent", "/usr/bin/true"],
                capture_output=True, timeout=10, env={"PATH": "/usr/bin:/bin"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap does not start: {exc}"
        if proc.returncode != 0:
            why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            return (f"bubblewrap cannot create namespaces here ({why[0]}) (fix: enable "
                    "unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1)")
        return None

    def _flags(self) -> list[str]:
        flags = [
            "--remount-ro", "/",  # after every mount point exists
            "--chdir", WORKSPACE_MOUNT,
            "--unshare-all", "--unshare-user", "--disable-userns",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--hostname", self.hostname,
            "--cap-drop", "ALL",
            "--die-with-parent", "--new-session",
            "--seccomp", str(SECCOMP_FD),
        ]
        net = self.spec.network
        if net.enabled:
            if net.netns_path is None:
                raise SandboxError("network access needs an egress-controlled namespace",
                                   fix="declare the tool's egress under security.egress")
            flags.append("--share-net")  # stay in the egress namespace nsenter put us in
        return flags

    def command(
        self,
        argv: list[str],
        limits: Limits | None = None,
        *,
        ro_paths: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        io: Path | None = None,
    ) -> list[str]:
        """Return the full host command line that runs ``argv`` in this sandbox.

        It starts with the sh :data:`LAUNCHER` (which opens the seccomp filter and, for a
        root bastion, stages the bind sources and drops to the sandbox account):
        self-contained, for callers that spawn it themselves.

        Args:
            argv: The command to run inside.
            limits: Overrides the spec's limits.
            ro_paths: Extra host paths mounted read-only at the same place (e.g. a server's
                code outside ``/usr``).
            env: Variables for the sandboxed command. They are NOT put on the command
                line (anyone may read ``/proc/*/cmdline``): start the returned command with
                :meth:`launch_env` as its whole environment; bwrap hands it on.
            io: A warm sandbox's FIFO directory, bound at ``_fifo.IO_MOUNT``.

        """
        limits = limits or self.spec.limits
        cmd, sources = self._bwrap_argv(argv, limits, ro_paths, env, io, SECCOMP_FD)
        if self._drop is not None:
            uid, gid = self._drop
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *cmd]
        stage = str(STAGE_DIR) if self._drop is not None else ""
        cmd = ["/bin/sh", "-c", LAUNCHER, "sh", str(self._seccomp), stage, *sources, "--", *cmd]
        if self._drop is not None:
            cmd = ["unshare", "--mount", "--propagation", "private", "--", *cmd]
        return _join_netns(self.spec, cmd)

    def _bwrap_argv(self, argv: list[str], limits: Limits, ro_paths: Sequence[Path],
                    env: Mapping[str, str] | None, io: Path | None, seccomp_fd: int
                    ) -> tuple[list[str], list[str]]:
        """Return bwrap's own command line and the bind sources to stage (root only)."""
        sources: list[str] = []

        def src(path: Path | str) -> str:
            """Return the path bwrap binds from: staged (see LAUNCHER) when run dropped."""
            if self._drop is None:
                return str(path)
            sources.append(str(path))
            return f"{STAGE_DIR}/{len(sources)}"

        ws, etc = src(self.spec.workspace), src(self._etc)
        tmp = str(limits.tmp_mb * 1024 * 1024)
        args = [self.bwrap, *self._root]
        for name in ("passwd", "group", "hosts"):
            args += ["--ro-bind", f"{etc}/{name}", f"/etc/{name}"]
        args += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", tmp, "--tmpfs", "/tmp",
            "--size", tmp, "--tmpfs", "/var/tmp",
            "--bind", ws, WORKSPACE_MOUNT,  # bwrap binds are nosuid,nodev
        ]
        for name in control_entries(self.spec.workspace):
            args += ["--ro-bind", f"{ws}/{name}", f"{WORKSPACE_MOUNT}/{name}"]
        net = self.spec.network
        if net.enabled and net.resolv_conf is not None:
            args += ["--ro-bind", src(net.resolv_conf), "/etc/resolv.conf"]
        if net.enabled and net.ca_bundle is not None:
            args += ["--ro-bind", src(net.ca_bundle), CA_BUNDLE]
        for path in ro_paths:
            host = Path(path).resolve()
            args += ["--ro-bind", src(host), str(host)]
        if io is not None:
            args += ["--bind", src(io), IO_MOUNT]
        if env is not None:
            self.environment(env)  # validates the names
        flags = [*self._flags()]
        flags[flags.index("--seccomp") + 1] = str(seccomp_fd)
        return [*args, *flags, "--", *limit_args(limits), *argv], sources

    def launch_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """Return the environment to start :meth:`command`'s command line with."""
        return self.environment(env)

    @staticmethod
    def environment(env: Mapping[str, str] | None) -> dict[str, str]:
        """Return the sandbox's clean environment plus the caller's variables."""
        out = dict(_ENV_BASE)
        for key, value in (env or {}).items():
            if not key or "=" in key or "\x00" in key or "\x00" in value:
                raise SandboxError(f"invalid environment variable name {key!r}")
            out[key] = value
        return out

    async def _run(self, argv: list[str], warm: Spawned | None, stdin: bytes | None,
                   env: Mapping[str, str] | None, wall: float, before: set[str]
                   ) -> ProcessResult:
        limits = self.spec.limits
        if warm is not None:
            io: Path = warm.tag
            try:
                result, _ = await drive_fifos(
                    warm, io, request_line(argv, self.environment(env)), stdin, wall,
                    limits.output_bytes, lambda: discard(warm),
                    {"backend": self.name, "command": " ".join(argv)[:200],
                     "workspace": str(self.spec.workspace), "warm": "yes"})
            finally:  # the tree (and what the command left running) goes off the call's path
                self._teardown_later(warm, io, before)
            notes = ""
            if warm.cgroup is not None and warm.cgroup.hit_limit():
                notes += (f"\n[sandbox: process limit ({warm.max_pids}) reached; "
                          "forks were refused]")
            if warm.memory is not None and warm.memory.oom_killed():
                notes += "\n[sandbox: memory limit reached; the kernel killed a process]"
                if result.killed_reason is None or result.killed_reason == "killed":
                    result = dataclasses.replace(result, killed_reason="memory")
            return dataclasses.replace(result, stderr=result.stderr + notes) if notes else result
        cmd, fd, preexec = self._direct(argv)
        try:
            return await run_tree(
                cmd,
                env=self.environment(env),
                stdin=stdin,
                wall_seconds=wall,
                output_bytes=limits.output_bytes,
                max_pids=limits.max_processes + 2,  # + bwrap's own monitor and init
                memory_bytes=memory_bytes(limits),
                label={"backend": self.name, "command": " ".join(argv)[:200],
                       "workspace": str(self.spec.workspace)},
                pass_fds=() if fd is None else (fd,), preexec=preexec,
            )
        finally:
            if fd is not None:
                os.close(fd)

    def _direct(self, argv: list[str], io: Path | None = None
                ) -> tuple[list[str], int | None, Callable[[], None] | None]:
        """Return (command line, seccomp fd to pass, preexec) for bwrap spawned by bastion.

        What :data:`LAUNCHER`'s four extra programs do (unshare, sh, mount, setpriv: ~18 ms
        of CPU per cold call) done in the forked child instead; with an egress namespace to
        join the launcher is used (``nsenter``).
        """
        if self.spec.network.enabled:
            return self.command(argv, io=io), None, None
        fd = os.open(self._seccomp, os.O_RDONLY | os.O_CLOEXEC)
        cmd, sources = self._bwrap_argv(argv, self.spec.limits, (), None, io, fd)
        preexec = _stage_and_drop(sources, self._drop) if self._drop is not None else None
        return cmd, fd, preexec

    def _teardown_later(self, warm: Spawned, io: Path, before: set[str]) -> None:
        async def teardown() -> None:
            # the waiter exits right after the command; a leftover background process does
            # not keep the sandbox: its tree is killed as a cold run's would be
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(warm.proc.wait(), 0.5)
            await discard(warm)
            shutil.rmtree(io, ignore_errors=True)
            # what the command left running could create one after the call's own check
            quarantine_new_controls(self.spec.workspace, before)

        task = asyncio.ensure_future(teardown())
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)

    async def drain(self) -> None:
        """Wait until the sandboxes of finished warm calls are torn down."""
        while self._teardowns:
            await asyncio.gather(*self._teardowns, return_exceptions=True)

    async def _spawn_waiter(self) -> Spawned:
        ids = self._drop or (os.getuid(), os.getgid())
        io = make_io("bastion-bwrap-io-", *ids)
        fd: int | None = None
        try:
            cmd, fd, preexec = self._direct(["python3", "-I", "-S", "-c", FIFO_WAITER], io=io)
            spawned = await spawn(
                cmd, env=self.environment(None), stdin_pipe=True,
                max_pids=self.spec.limits.max_processes + 2,
                memory_bytes=memory_bytes(self.spec.limits),
                pass_fds=() if fd is None else (fd,), preexec=preexec)
        except BaseException:
            shutil.rmtree(io, ignore_errors=True)
            raise
        finally:
            if fd is not None:
                os.close(fd)
        spawned.tag = io
        try:  # the waiter writes one NUL byte once it is up and reading
            assert spawned.proc.stdout is not None
            await asyncio.wait_for(spawned.proc.stdout.readexactly(1), 20)
        except BaseException:
            await discard(spawned)
            shutil.rmtree(io, ignore_errors=True)
            raise
        return spawned

    # close(): the base's (the warm pool); the identity files are shared and kept (identity_dir)

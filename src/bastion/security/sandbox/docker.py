"""The Docker Engine engine of the container backend (see :mod:`.container`).

Docker specifics:

* The client: ``$BASTION_DOCKER_CLI``, else ``/usr/bin/docker`` (the client Debian's
  ``docker.io`` and Docker's own packages install next to their daemon), else ``docker`` on
  PATH. The daemon: ``$DOCKER_HOST`` (passed as ``-H``; every client call runs with a minimal
  environment), else the client's default ``/var/run/docker.sock``. A daemon that is down or
  does not answer within :data:`DAEMON_TIMEOUT_S` is a one-line problem with the fix, never
  a hang.
* docker-init (tini) as init; ``rm -f`` kills at once.
* The workspace bind is plain ``rw``: Docker's ``-v`` takes no ``nosuid``/``nodev``. They
  are not needed: with ``no-new-privileges`` a setuid file cannot raise privileges, every
  capability is dropped (no ``mknod``), and the device cgroup refuses device nodes anyway.
* Egress: Docker cannot join a named network namespace (podman's ``--network ns:PATH``).
  So each egress-controlled sandbox gets a holder container (``bastion-net-PID-...``, from
  the same image) whose only process ``nsenter``-s into the egress namespace and sleeps;
  every call's container then runs with ``--network container:HOLDER`` and so lives in
  exactly that namespace (checked by inode before the first call). The holder alone has
  ``CAP_SYS_ADMIN`` (for ``setns``) and runs nothing else; it is removed on close.
* Rootless mode and user-namespace remapping are read from ``docker info``
  (:meth:`DockerSandbox.info`); ``bastion doctor`` explains how to turn remapping on when the
  daemon runs as root without it. Under remapping the container's uids are shifted on the
  host, so the workspace is handed to the shifted sandbox account; a remapped container
  cannot join a namespace of the host's user namespace, so egress-controlled tools are refused
  there (with the fix: another backend for that tool).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from bastion.errors import SandboxError
from bastion.security.sandbox._hostuser import drop_to, hand_over
from bastion.security.sandbox.base import CA_BUNDLE, SandboxSpec
from bastion.security.sandbox.container import (
    IMAGE,
    REMOVE_TIMEOUT_S,
    WARM_PREFIX,
    ContainerSandbox,
    EngineInfo,
)

INSTALL_HINT = "apt-get install docker.io tini, then start the daemon (systemctl start docker)"
HOLDER_PREFIX = "bastion-net-"  # + pid-...: egress holders (leftovers of dead pids removed)
DAEMON_TIMEOUT_S = 10.0
REMAP_FIX = ('add {"userns-remap": "default"} to /etc/docker/daemon.json and restart the '
             "daemon (systemctl restart docker), or run Docker rootless "
             "(dockerd-rootless-setuptool.sh install)")
_NETNS_IN_HOLDER = "/run/bastion-netns"


def docker_cli() -> str | None:
    """Return the Docker client binary to use (see the module docstring)."""
    chosen = os.environ.get("BASTION_DOCKER_CLI")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return shutil.which("docker")


def daemon_address() -> str:
    """Return where the Docker daemon is asked (``$DOCKER_HOST`` or the default socket)."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _daemon_fix() -> str:
    if os.environ.get("DOCKER_HOST"):
        return "start dockerd listening there, or correct DOCKER_HOST"
    return "start it: systemctl start docker (or set DOCKER_HOST to its socket)"


def _remap_base(root_dir: str) -> tuple[int, int] | None:
    """Return the host uid/gid base of a remapped daemon from its root dir ``.../UID.GID``."""
    tail = Path(root_dir).name.split(".")
    if len(tail) == 2 and all(t.isdigit() for t in tail):
        return int(tail[0]), int(tail[1])
    return None


class DockerSandbox(ContainerSandbox):
    """The container backend on Docker Engine."""

    name = "docker"
    engine = "docker"
    install_hint = INSTALL_HINT

    def __init__(self, spec: SandboxSpec, *, cli: str | None = None,
                 hostname: str = "sandbox", warm: int = 0) -> None:
        self._holder: str | None = None
        facts = self._facts(cli or docker_cli())
        self._remap = _remap_base(facts.get("root_dir", "")) if facts.get("userns") else None
        if self._remap is not None and spec.network.enabled:
            # runc cannot enter a namespace of the host's user namespace from a remapped
            # container ("can't get final child's PID from pipe"), so the holder cannot help
            raise SandboxError(
                "a Docker daemon with userns-remap cannot join bastion's egress namespace",
                fix="give this tool another backend (security.tool_sandboxes.<tool>: podman, "
                    "gvisor or bubblewrap), or use a daemon without userns-remap for it")
        if self._remap is not None:
            self._remap_workspace(spec.workspace, self._remap)
        super().__init__(spec, cli=cli, hostname=hostname, warm=warm)
        if self._remap is not None:  # the ids inside; the host sees them shifted
            self.uid, self.gid = self._shifted_owner(spec.workspace, self._remap)
            self.host_ids = (self.uid + self._remap[0], self.gid + self._remap[1])
        if spec.network.enabled:
            self._holder = self._start_holder()

    @classmethod
    def find_cli(cls) -> str | None:
        """Return the Docker client (``$BASTION_DOCKER_CLI``, /usr/bin/docker, PATH)."""
        return docker_cli()

    @classmethod
    def client_args(cls) -> list[str]:
        """Return ``-H $DOCKER_HOST`` when set (client calls get a minimal environment)."""
        host = os.environ.get("DOCKER_HOST")
        return ["-H", host] if host else []

    @classmethod
    def _engine_problem(cls, cli: list[str]) -> str | None:
        facts = cls._facts(cli[0])
        return facts.get("problem")

    @classmethod
    def _facts(cls, exe: str | None) -> dict[str, str]:
        """Ask the daemon (bounded by DAEMON_TIMEOUT_S); ``problem`` set when it cannot be."""
        if exe is None:
            return {"problem": f"docker is not installed (fix: {INSTALL_HINT})"}
        where = daemon_address()
        try:
            proc = subprocess.run(
                [exe, *cls.client_args(), "info", "--format", "{{json .}}"],
                capture_output=True, text=True, timeout=DAEMON_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"problem": f"the Docker daemon at {where} does not answer within "
                               f"{DAEMON_TIMEOUT_S:g} s (fix: {_daemon_fix()})"}
        except OSError as exc:
            return {"problem": f"the Docker client {exe} does not run: {exc} "
                               f"(fix: {INSTALL_HINT})"}
        try:
            data = json.loads(proc.stdout) if proc.returncode == 0 else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not data.get("ServerVersion"):
            try:  # newer clients print {"ServerErrors": [...]} on stdout
                errors = json.loads(proc.stdout).get("ServerErrors") or []
            except (ValueError, AttributeError):
                errors = []
            lines = [str(e) for e in errors] or (
                proc.stderr.strip() or proc.stdout.strip()).splitlines()
            why = next((ln for ln in lines if "daemon" in ln.lower()), lines[-1] if lines
                       else "no answer")
            return {"problem": f"the Docker daemon at {where} is not reachable: "
                               f"{why.strip()[:200]} (fix: {_daemon_fix()})"}
        options = " ".join(str(o) for o in data.get("SecurityOptions") or [])
        facts = {"version": str(data["ServerVersion"]),
                 "root_dir": str(data.get("DockerRootDir", ""))}
        if "name=rootless" in options:
            facts["rootless"] = "yes"
        if "name=userns" in options:
            facts["userns"] = "yes"
        return facts

    @classmethod
    def info(cls) -> EngineInfo:
        """Return the daemon's version, whether it is rootless or remaps user namespaces."""
        exe = docker_cli()
        facts = cls._facts(exe)
        if "problem" in facts:
            return EngineInfo("docker", exe, problem=facts["problem"])
        return EngineInfo("docker", exe, version=facts["version"],
                          rootless="rootless" in facts, userns_remap="userns" in facts)

    # -- user-namespace remapping -------------------------------------------------------------

    @staticmethod
    def _remap_workspace(workspace: Path, base: tuple[int, int]) -> None:
        """Hand a root-owned workspace to the sandbox account as the remapped host sees it."""
        ids = drop_to()
        if ids is not None:
            hand_over(workspace, ids[0] + base[0], ids[1] + base[1])

    @staticmethod
    def _shifted_owner(workspace: Path, base: tuple[int, int]) -> tuple[int, int]:
        """Return the in-container ids that own ``workspace`` on the host under remapping."""
        st = os.stat(workspace)
        uid, gid = st.st_uid - base[0], st.st_gid - base[1]
        if not (0 < uid < 65536 and 0 < gid < 65536):
            raise SandboxError(
                f"the workspace {workspace} (owner {st.st_uid}) is outside the Docker daemon's "
                f"remapped user range (from {base[0]})",
                fix="run bastion as root (it hands the workspace over) or chown the workspace "
                    f"to {base[0] + 1000}")
        return uid, gid

    # -- networks ------------------------------------------------------------------------------

    def _network_args(self) -> list[str]:
        if self._holder is None:
            return ["--network", "none", "--hostname", self.hostname]
        args = ["--network", f"container:{self._holder}"]  # the holder's: the egress namespace
        if self.spec.network.resolv_conf is not None:  # its nftables + resolver apply
            args += ["-v", f"{self.spec.network.resolv_conf}:/etc/resolv.conf:ro"]
        if self.spec.network.ca_bundle is not None:  # the egress proxy's per-sandbox CA
            args += ["-v", f"{self.spec.network.ca_bundle}:{CA_BUNDLE}:ro"]
        return args

    def _start_holder(self) -> str:
        """Start the container that holds the egress namespace; return its name."""
        netns = self.spec.network.netns_path
        assert netns is not None
        name = f"{HOLDER_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self._sweep_stale()
        argv = [*self.cli, "run", "-d", "--name", name, "--network", "none",
                "--hostname", self.hostname, "--read-only", "--log-driver", "none",
                "--cap-drop", "ALL", "--cap-add", "SYS_ADMIN",
                "--security-opt", "no-new-privileges", "--pids-limit", "4",
                "--memory", "32m",
                "-v", f"{netns}:{_NETNS_IN_HOLDER}:ro",
                IMAGE, "nsenter", f"--net={_NETNS_IN_HOLDER}", "sleep", "infinity"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise SandboxError(f"docker cannot start the egress holder: "
                               f"{proc.stderr.strip()[-300:]}", fix="bastion doctor")
        want = os.stat(netns).st_ino
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the holder must really be in the namespace
            pid = subprocess.run([*self.cli, "inspect", "-f", "{{.State.Pid}}", name],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
            with contextlib.suppress(OSError, ValueError):
                if int(pid) > 0 and os.stat(f"/proc/{int(pid)}/ns/net").st_ino == want:
                    return name
            time.sleep(0.05)
        subprocess.run([*self.cli, *self.rm_args, name], capture_output=True, timeout=60)
        raise SandboxError("docker's egress holder did not join the egress namespace",
                           fix="bastion doctor")

    def close(self) -> None:
        """Remove the pooled containers and the egress holder."""
        super().close()
        holder, self._holder = self._holder, None
        if holder is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run([*self.cli, *self.rm_args, holder], capture_output=True,
                               timeout=REMOVE_TIMEOUT_S)

    def _stale_prefixes(self) -> tuple[str, ...]:
        return (WARM_PREFIX, HOLDER_PREFIX)

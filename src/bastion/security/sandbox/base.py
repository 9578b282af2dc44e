"""The sandbox seam: run a command confined to a workspace with limits and a network policy."""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bastion.tools.base import CONTROL_ENTRIES, ProcessResult, ProcessRunner

if TYPE_CHECKING:
    from bastion.security.sandbox._pool import WarmPool
    from bastion.security.sandbox._proc import Spawned

#: Where every backend mounts the workspace (also the working directory of sandboxed commands).
WORKSPACE_MOUNT = "/workspace"


def present_controls(workspace: Path) -> set[str]:
    """Return the control entries in ``workspace`` of any type (links included)."""
    return {name for name in CONTROL_ENTRIES if os.path.lexists(workspace / name)}


def quarantine_new_controls(workspace: Path, before: set[str]) -> str:
    """Move control entries a sandboxed command created aside; return a note for its stderr.

    Existing ones are mounted read-only (:func:`control_entries`), but one that did not
    exist could be created -- a new ``.git`` with ``core.fsmonitor`` in a workspace that is
    not a checkout, an ``.envrc`` -- and the host would run it later. It is renamed (never
    followed, never deleted) to ``.bastion-quarantine-<name>-<time>``.
    """
    notes = []
    for name in sorted(present_controls(workspace) - before):
        aside = f".bastion-quarantine-{name.lstrip('.')}-{time.time_ns()}"
        try:
            os.rename(workspace / name, workspace / aside)
        except OSError as exc:
            notes.append(f"[sandbox: the command created {name}; moving it aside failed: "
                         f"{exc.strerror}]")
            continue
        notes.append(f"[sandbox: the command created {name}, which programs on the host run "
                     f"or obey; moved to {aside} (create it yourself if you want it)]")
    return "".join("\n" + n for n in notes)


def control_entries(workspace: Path) -> list[str]:
    """Return the control entries present in ``workspace`` (never symbolic links).

    Every backend mounts them read-only into the sandbox (see
    :data:`bastion.tools.base.CONTROL_ENTRIES`), so sandboxed code cannot plant host code
    execution there. A symbolic link is left alone: binding it would mount whatever it
    points to, possibly outside the workspace.
    """
    out = []
    for name in sorted(CONTROL_ENTRIES):
        try:
            st = os.lstat(workspace / name)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            out.append(name)
    return out


@dataclass(slots=True, frozen=True)
class Limits:
    """Resource limits for one sandboxed process tree."""

    wall_seconds: float = 30.0
    cpu_seconds: int = 30
    memory_mb: int = 512
    max_processes: int = 64
    file_size_mb: int = 64
    output_bytes: int = 64_000
    tmp_mb: int = 64  # size of the sandbox's private /tmp and /var/tmp (each)


@dataclass(slots=True, frozen=True)
class NetworkPolicy:
    """What network a sandbox gets: none (default), or an egress allowlist."""

    enabled: bool = False
    allow_domains: tuple[str, ...] = ()
    allow_cidrs: tuple[str, ...] = ()
    allow_ports: tuple[int, ...] = ()
    netns_path: str | None = None  # the egress-controlled namespace to join (see egress/)
    resolv_conf: Path | None = None  # its resolver, mounted as /etc/resolv.conf
    ca_bundle: Path | None = None  # egress proxy's per-sandbox CA, mounted over CA_BUNDLE


CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # the only CA a proxied sandbox trusts


@dataclass(slots=True, frozen=True)
class SandboxSpec:
    """Everything a backend needs to confine one runner."""

    workspace: Path
    limits: Limits = field(default_factory=Limits)
    network: NetworkPolicy = field(default_factory=NetworkPolicy)


class Sandbox(ProcessRunner, Protocol):
    """A :class:`ProcessRunner` that confines what it runs; ``available`` says if it can."""

    name: str

    def __init__(self, spec: SandboxSpec, *, warm: int = 0) -> None:
        """Confine runs to ``spec``; ``warm`` runners are started ahead (0: none)."""
        ...

    @classmethod
    def available(cls) -> str | None:
        """Return ``None`` when usable here, else why not (with the install line)."""
        ...

    def command(self, argv: list[str], limits: Limits | None = None, *,
                ro_paths: Sequence[Path] = (), env: Mapping[str, str] | None = None
                ) -> list[str]:
        """Return a host command line that runs ``argv`` confined.

        For launchers that spawn and talk to the process themselves (stdio MCP servers);
        without a per-run cgroup or wall-clock kill, which only :meth:`run` applies.
        ``env`` values never appear on the returned command line: start it with
        :meth:`launch_env`'s environment.
        """
        ...

    def launch_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """Return the environment :meth:`command`'s command line must be started with."""
        ...

    async def drain(self) -> None:
        """Wait until the clean-ups of finished calls are done."""
        ...

    def close(self) -> None:
        """Release what the backend holds (warm sandboxes, helpers); safe to call twice."""
        ...

    async def aclose(self) -> None:
        """Close from async code: stop the warm pool in its loop, drain, then :meth:`close`."""
        ...


_PROBED: dict[type, str | None] = {}


class SandboxBackend:
    """Base of every sandbox backend: the one :meth:`run` path, probing, and the lifecycle.

    :meth:`run` is the same for every backend: the deadline, the workspace's control
    entries before the call, a warm sandbox from the pool (refilled after the call), the
    backend's :meth:`_run` hook, then quarantine of control entries the command created.
    :meth:`available` runs the class's ``_probe`` once per process. :meth:`close` (sync,
    no event loop needed) and :meth:`aclose` release what the backend holds; a backend
    that holds more than its warm pool extends :meth:`close` and calls ``super().close()``.
    """

    name: str
    spec: SandboxSpec
    warm_pool: WarmPool | None = None

    @classmethod
    def available(cls) -> str | None:
        """Return ``None`` when the backend works here, else why not (probed once)."""
        if cls not in _PROBED:
            _PROBED[cls] = cls._probe()
        return _PROBED[cls]

    @classmethod
    def _probe(cls) -> str | None:
        raise NotImplementedError(f"{cls.__name__} must define _probe")

    async def run(self, argv: list[str], *, stdin: bytes | None = None,
                  env: Mapping[str, str] | None = None, timeout_s: float | None = None
                  ) -> ProcessResult:
        """Run ``argv`` confined; the deadline is ``min(timeout_s, wall limit)``."""
        limits = self.spec.limits
        wall = limits.wall_seconds if timeout_s is None else min(timeout_s, limits.wall_seconds)
        pool = self.warm_pool
        before = present_controls(self.spec.workspace)
        try:
            result = await self._run(argv, pool.take() if pool is not None else None, stdin,
                                     env, wall, before)
        finally:
            if pool is not None:
                pool.refill()  # after the call, not competing with it
        note = quarantine_new_controls(self.spec.workspace, before)
        return dataclasses.replace(result, stderr=result.stderr + note) if note else result

    async def _run(self, argv: list[str], warm: Spawned | None, stdin: bytes | None,
                   env: Mapping[str, str] | None, wall: float, before: set[str]
                   ) -> ProcessResult:
        """Run one call: in ``warm`` (a pooled sandbox) when given, else in a fresh one."""
        raise NotImplementedError(f"{type(self).__name__} must define _run")

    async def drain(self) -> None:
        """Wait until the clean-ups of finished calls are done (none by default)."""

    def close(self) -> None:
        """Kill the warm sandboxes, if any are waiting; safe to call twice."""
        if self.warm_pool is not None:
            self.warm_pool.shutdown()

    async def aclose(self) -> None:
        """Stop the warm pool in its loop, wait for pending clean-ups, then :meth:`close`."""
        if self.warm_pool is not None:
            await self.warm_pool.close()
        await self.drain()
        self.close()

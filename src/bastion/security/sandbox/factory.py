"""One factory for sandboxes: config name -> backend instance, or why there is none."""

from __future__ import annotations

from pathlib import Path

from bastion.config.model import LimitsConfig
from bastion.errors import SandboxError
from bastion.security.sandbox.base import Limits, NetworkPolicy, Sandbox, SandboxSpec

BACKENDS = ("bubblewrap", "gvisor", "podman")


def limits_from_config(cfg: LimitsConfig) -> Limits:
    """Convert the config section into the sandbox's :class:`Limits`."""
    return Limits(
        wall_seconds=cfg.wall_seconds,
        cpu_seconds=cfg.cpu_seconds,
        memory_mb=cfg.memory_mb,
        max_processes=cfg.max_processes,
        file_size_mb=cfg.file_size_mb,
        output_bytes=cfg.output_bytes,
    )


def backend_class(kind: str) -> type[Sandbox]:
    """Return the class of a backend by its config name."""
    if kind == "bubblewrap":
        from bastion.security.sandbox.bwrap import BubblewrapSandbox

        return BubblewrapSandbox
    if kind == "gvisor":
        from bastion.security.sandbox.gvisor import GVisorSandbox

        return GVisorSandbox
    if kind == "podman":
        from bastion.security.sandbox.podman import PodmanSandbox

        return PodmanSandbox
    raise SandboxError(f"unknown sandbox backend {kind!r}",
                       fix="set security.sandbox to auto, bubblewrap, gvisor, podman or none")


def resolve_kind(kind: str) -> str:
    """Resolve ``auto`` to the strongest backend that works here (gVisor, else bubblewrap)."""
    if kind != "auto":
        return kind
    try:
        if backend_class("gvisor").available() is None:
            return "gvisor"
    except SandboxError:
        pass
    return "bubblewrap"


def build_sandbox(kind: str, spec: SandboxSpec, *, warm: int = 0
                  ) -> tuple[Sandbox | None, str | None]:
    """Return a backend for ``spec`` or ``(None, problem)``; ``none`` never sandboxes."""
    if kind == "none":
        return None, "sandboxing is disabled (security.sandbox: none), so sandboxed tools refuse"
    try:
        cls = backend_class(resolve_kind(kind))
    except SandboxError as exc:
        return None, exc.user_text()
    problem = cls.available()
    if problem:
        return None, problem
    try:
        if warm and cls.name in ("bubblewrap", "podman"):  # the backends with a warm pool
            return cls(spec, warm=warm), None  # type: ignore[call-arg]
        return cls(spec), None  # type: ignore[call-arg]
    except SandboxError as exc:
        return None, exc.user_text()


def create_sandbox(
    kind: str,
    workspace: Path,
    limits: LimitsConfig,
    network: NetworkPolicy | None = None,
    *,
    warm: int = 0,
) -> tuple[Sandbox | None, str | None]:
    """Return ``(sandbox, None)``, or ``(None, problem)`` when the backend cannot run here.

    Sandboxed tools refuse to run when the sandbox is ``None``; there is no silent
    fallback to the host.
    """
    spec = SandboxSpec(Path(workspace), limits_from_config(limits), network or NetworkPolicy())
    return build_sandbox(kind, spec, warm=warm)

"""One factory for sandboxes: config name -> backend instance, or why there is none."""

from __future__ import annotations

from pathlib import Path

from bastion.config.model import LimitsConfig
from bastion.errors import SandboxError
from bastion.security.sandbox.base import Limits, NetworkPolicy, Sandbox, SandboxSpec


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


def create_sandbox(
    kind: str,
    workspace: Path,
    limits: LimitsConfig,
    network: NetworkPolicy | None = None,
) -> tuple[Sandbox | None, str | None]:
    """Return ``(sandbox, None)``, or ``(None, problem)`` when the backend cannot run here.

    Sandboxed tools refuse to run when the sandbox is ``None``; there is no silent
    fallback to the host.
    """
    spec = SandboxSpec(Path(workspace), limits_from_config(limits), network or NetworkPolicy())
    if kind == "none":
        return None, "sandboxing is disabled (security.sandbox: none), so sandboxed tools refuse"
    if kind == "bubblewrap":
        from bastion.security.sandbox.bwrap import BubblewrapSandbox

        problem = BubblewrapSandbox.available()
        if problem:
            return None, problem
        try:
            return BubblewrapSandbox(spec), None
        except SandboxError as exc:
            return None, exc.user_text()
    return None, f"unknown sandbox backend {kind!r} (fix: set security.sandbox to bubblewrap)"

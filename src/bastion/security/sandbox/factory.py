"""One factory for sandboxes: config name -> backend instance, or why there is none.

``auto`` means the strongest isolation that really works here: gVisor when ``runsc`` is
installed and passes its one-time self-check (it starts a container and runs ``ls -l`` and
``stat`` in it), else bubblewrap. :func:`isolation_report` says, per tool, which backend it
actually gets and why (``bastion doctor`` and ``bastion sandbox status`` print it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from bastion.config.backends import SANDBOX_BACKENDS, load_object
from bastion.config.model import LimitsConfig
from bastion.errors import SandboxError
from bastion.security.sandbox.base import (
    Limits,
    NetworkPolicy,
    Sandbox,
    SandboxBackend,
    SandboxSpec,
)

if TYPE_CHECKING:
    from bastion.config.model import Config
    from bastion.security.sandbox.container import EngineInfo

#: The backends by config name (``config.backends.SANDBOX_BACKENDS``: name -> "module:Class").
BACKENDS = SANDBOX_BACKENDS
#: The container engines (chosen explicitly; ``auto`` never picks one).
CONTAINER_ENGINES = ("podman", "docker")
#: The tools that run code the model wrote (``auto`` gives them gVisor where it works).
CODE_TOOLS = ("shell", "python")


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
    """Return the class of a backend by its config name (imported only now)."""
    target = SANDBOX_BACKENDS.get(kind)
    if target is None:
        raise SandboxError(f"unknown sandbox backend {kind!r}",
                           fix=f"set security.sandbox to auto, {', '.join(BACKENDS)} or none")
    cls = load_object(target)
    if not (isinstance(cls, type) and issubclass(cls, SandboxBackend)):
        raise SandboxError(f"sandbox backend {kind!r} ({target}) is not a SandboxBackend class",
                           fix="subclass bastion.security.sandbox.base.SandboxBackend")
    return cast("type[Sandbox]", cls)


def explain_kind(kind: str) -> tuple[str, str]:
    """Return ``(backend, why)`` for a configured kind, resolving ``auto``."""
    if kind != "auto":
        return kind, "configured"
    try:
        problem = backend_class("gvisor").available()
    except (SandboxError, ImportError) as exc:
        problem = str(exc)
    if problem is None:
        return "gvisor", "runsc is installed and passed its self-check"
    return "bubblewrap", f"gVisor unusable: {problem}"


def resolve_kind(kind: str) -> str:
    """Resolve ``auto`` to the strongest backend that works here (gVisor, else bubblewrap)."""
    return explain_kind(kind)[0]


@dataclass(slots=True, frozen=True)
class Isolation:
    """What one tool actually runs in."""

    tool: str
    configured: str  # the config value that applies (security.tool_sandboxes or .sandbox)
    backend: str  # what that resolves to; "none" when the tool refuses to run
    why: str
    problem: str | None = None  # set when the backend cannot run here


def isolation_report(config: Config, tools: Iterable[str] = CODE_TOOLS) -> list[Isolation]:
    """Return, per sandboxed tool, the isolation it gets with ``config`` on this machine."""
    sec = config.security
    out: list[Isolation] = []
    for tool in tools:
        per_tool = tool in sec.tool_sandboxes
        kind = sec.tool_sandboxes.get(tool, sec.sandbox)
        source = f"security.tool_sandboxes.{tool}" if per_tool else "security.sandbox"
        if kind == "none":
            out.append(Isolation(tool, kind, "none", f"{source}: none",
                                 "sandboxing is off: the tool refuses to run"))
            continue
        backend, why = explain_kind(kind)
        why = f"{source}: {kind}" + ("" if why == "configured" else f" ({why})")
        if tool in sec.egress:
            why += "; own egress namespace"
        try:
            problem = backend_class(backend).available()
        except (SandboxError, ImportError) as exc:
            problem = str(exc)
        out.append(Isolation(tool, kind, backend, why, problem))
    return out


def engine_report(engines: Iterable[str] = CONTAINER_ENGINES) -> list[EngineInfo]:
    """Return what each container engine says about itself (version, rootless, remapping)."""
    from bastion.security.sandbox.container import ContainerSandbox

    out = []
    for engine in engines:
        cls = backend_class(engine)
        assert issubclass(cls, ContainerSandbox)
        out.append(cls.info())
    return out


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
        return cls(spec, warm=warm), None
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

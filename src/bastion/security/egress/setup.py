"""Build egress-controlled sandboxes for the tools (and MCP servers) that declare egress."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from pathlib import Path

from bastion.config.model import Config, EgressConfig
from bastion.errors import SandboxError
from bastion.security.egress.netns import EgressNetwork, Recorder, Uplink
from bastion.security.egress.rules import EgressRule
from bastion.security.sandbox.base import NetworkPolicy, Sandbox, SandboxSpec
from bastion.security.sandbox.factory import build_sandbox, limits_from_config
from bastion.tools.base import ProcessRunner


def uplink_from(config: Config) -> Uplink:
    """Return the configured uplink or a clear error."""
    up = config.security.egress_uplink
    if up is None:
        raise SandboxError(
            "egress is declared but security.egress_uplink is not set",
            fix="set security.egress_uplink.netns (a router namespace) and .resolver",
        )
    return Uplink(up.netns, up.resolver)


def network_for(subject: str, cfg: EgressConfig, config: Config,
                audit: Recorder | None) -> EgressNetwork:
    """Create and start the egress namespace for ``subject``."""
    rule = EgressRule.create(cfg.domains, cfg.cidrs, cfg.ports, name=subject)
    return EgressNetwork(rule, uplink_from(config), audit=audit, subject=subject).start()


def policy_for(net: EgressNetwork, cfg: EgressConfig) -> NetworkPolicy:
    """Return the sandbox network policy that joins ``net``."""
    return NetworkPolicy(enabled=True, allow_domains=tuple(cfg.domains),
                         allow_cidrs=tuple(cfg.cidrs), allow_ports=tuple(cfg.ports),
                         netns_path=net.netns_path, resolv_conf=net.resolv_conf)


def egress_sandbox(kind: str, spec: SandboxSpec, net: EgressNetwork,
                   cfg: EgressConfig) -> Sandbox:
    """Return a ``kind`` sandbox for ``spec`` whose network is ``net``."""
    spec = dataclasses.replace(spec, network=policy_for(net, cfg))
    box, problem = build_sandbox(kind, spec)
    if box is None:
        raise SandboxError(f"no sandbox for egress: {problem}")
    return box


def tool_runners(config: Config, workspace: Path, audit: Recorder | None,
                 tools: Collection[str] | None = None,
                 ) -> tuple[dict[str, ProcessRunner], list[Callable[[], None]], dict[str, str]]:
    """Return per-tool runners (own backend and/or egress), their closers, and problems.

    A tool listed in ``security.tool_sandboxes`` gets that backend; one listed in
    ``security.egress`` gets its own egress-controlled namespace. A tool whose runner cannot
    be set up gets no entry and a problem; it then uses the default (network-less) sandbox,
    so it is never given more network than declared.
    """
    runners: dict[str, ProcessRunner] = {}
    closers: list[Callable[[], None]] = []
    problems: dict[str, str] = {}
    sec = config.security
    spec = SandboxSpec(workspace, limits_from_config(sec.limits))
    for tool in sorted(set(sec.egress) | set(sec.tool_sandboxes)):
        if tools is not None and tool not in tools:
            continue  # not a sandboxed tool (web_fetch applies its allowlist itself)
        kind = sec.tool_sandboxes.get(tool, sec.sandbox)
        cfg = sec.egress.get(tool)
        try:
            if cfg is None:
                box, problem = build_sandbox(kind, spec)
                if box is None:
                    raise SandboxError(problem or f"{kind} is unavailable")
                runners[tool] = box
                continue
            net = network_for(tool, cfg, config, audit)
            closers.append(net.close)
            runners[tool] = egress_sandbox(kind, spec, net, cfg)
        except SandboxError as exc:
            problems[tool] = exc.user_text()
    return runners, closers, problems

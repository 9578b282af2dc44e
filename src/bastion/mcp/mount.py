"""Mount the configured external MCP servers into the registry, stdio ones inside a sandbox."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.config import paths
from bastion.config.model import Config, McpServerConfig
from bastion.errors import BastionError, SandboxError
from bastion.mcp.toolset import MCPConnection, ServerSpec, server_toolset
from bastion.security.sandbox.base import Limits, SandboxSpec
from bastion.security.sandbox.factory import build_sandbox, limits_from_config
from bastion.tools.base import Risk
from bastion.tools.registry import ToolRegistry, Toolset

log = logging.getLogger(__name__)


class Closeable(Protocol):
    """What a server needs besides its connection: a sandbox, an egress namespace, a lease."""

    def close(self) -> None:
        """Release it."""


@dataclass
class Mounted:
    """What mounting produced: live toolsets, and why the others are missing."""

    toolsets: list[Toolset] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    keep: list[Closeable] = field(default_factory=list)  # must outlive the servers

    def close(self) -> None:
        """Disconnect every server."""
        for ts in self.toolsets:
            ts.close()
        self.toolsets.clear()
        close_kept(self.keep)


class _Placeholder:
    """A bound secret's placeholder, live while its server runs (``close`` releases it)."""

    def __init__(self, book: Any, placeholder: str) -> None:
        self.book, self.placeholder = book, placeholder

    def close(self) -> None:
        self.book.release(self.placeholder)


def bound_env(cfg: McpServerConfig, config: Config, keep: list[Closeable], secrets: Any
              ) -> dict[str, str]:
    """Return ``cfg.env`` plus a placeholder for each secret bound for ``mcp:<name>``.

    ``secrets.tools["mcp:<name>"]`` entries of the form ``{ref, hosts, ...}``: the server gets
    a placeholder (for its lifetime); its egress proxy swaps it on the wire to the hosts.
    """
    from bastion.security.secrets.resolver import tool_bindings

    env = dict(cfg.env)
    bound = tool_bindings(f"mcp:{cfg.name}", config.secrets.tools)
    if bound and (secrets is None or cfg.egress is None):
        raise SandboxError(f"MCP server {cfg.name} has bound secrets but no egress",
                           fix=f"add mcp_servers[{cfg.name}].egress with the bound hosts")
    for name, binding in bound.items():
        placeholder = secrets.book.issue(binding, secrets.resolve(binding.ref))
        keep.append(_Placeholder(secrets.book, placeholder))
        env[name] = placeholder
    return env


def server_spec(cfg: McpServerConfig, config: Config, keep: list[Closeable],
                audit: Any = None, secrets: Any = None, inspection: Any = None) -> ServerSpec:
    """Return how to reach ``cfg``: HTTP as is, stdio wrapped in its sandbox."""
    if cfg.url is not None:
        headers = {}
        if cfg.token is not None:
            headers["Authorization"] = f"Bearer {cfg.token.get_secret_value()}"
        return ServerSpec(cfg.name, url=cfg.url, headers=headers, timeout_s=cfg.timeout_s)
    assert cfg.command is not None
    kind = config.security.sandbox if cfg.sandbox == "default" else cfg.sandbox
    if kind == "none":
        log.warning("MCP server %s runs unsandboxed (sandbox: none)", cfg.name)
        exe = shutil.which(cfg.command[0]) or cfg.command[0]
        return ServerSpec(cfg.name, argv=[exe, *cfg.command[1:]], env=dict(cfg.env),
                          timeout_s=cfg.timeout_s,
                          errlog=paths.data_dir("mcp") / f"{cfg.name}.log")
    workspace = paths.data_dir("mcp") / cfg.name
    workspace.mkdir(parents=True, exist_ok=True)
    base = limits_from_config(config.security.limits)
    limits = Limits(
        wall_seconds=base.wall_seconds,
        cpu_seconds=24 * 3600,  # a long-lived server; its calls are bounded by timeout_s
        memory_mb=cfg.memory_mb,
        max_processes=base.max_processes,
        file_size_mb=base.file_size_mb,
        output_bytes=base.output_bytes,
    )
    spec = SandboxSpec(workspace, limits)
    proxy_env: dict[str, str] = {}
    serving = None
    if cfg.egress is not None:  # its own namespace: nftables default-drop + DNS allowlist
        from bastion.security.approval import current_call
        from bastion.security.egress.setup import network_for, policy_for

        net = network_for(f"mcp:{cfg.name}", cfg.egress, config, audit, inspection)
        keep.append(net)
        spec = dataclasses.replace(spec, network=policy_for(net, cfg.egress))
        proxy = net.proxy
        if proxy is not None:  # its HTTP(S) clients go through the proxy
            proxy_env = proxy.env()

            def serving() -> Any:  # the gateway's current call, while the server works on it
                return proxy.serving(current_call())
    env = {**proxy_env, **bound_env(cfg, config, keep, secrets)}
    sandbox, problem = build_sandbox(kind, spec)
    if sandbox is None:
        raise SandboxError(f"MCP server {cfg.name} cannot be sandboxed: {problem}")
    keep.append(sandbox)
    # the variables (often API tokens) go through the environment, never the command line
    argv = sandbox.command(list(cfg.command), ro_paths=cfg.mounts, env=env)
    return ServerSpec(cfg.name, argv=argv, env=sandbox.launch_env(env),
                      timeout_s=cfg.timeout_s,
                      errlog=paths.data_dir("mcp") / f"{cfg.name}.log", serving=serving)


def connect(cfg: McpServerConfig, config: Config, keep: list[Closeable],
            audit: Any = None, secrets: Any = None, inspection: Any = None) -> Toolset:
    """Start (or reach) one server and return its toolset (egress events go to ``audit``)."""
    conn = MCPConnection(server_spec(cfg, config, keep, audit, secrets, inspection))
    try:
        conn.start()
    except BaseException:
        close_kept(keep)
        raise
    kind = config.security.sandbox if cfg.sandbox == "default" else cfg.sandbox
    # a remote server, an unsandboxed one or one with an egress allowlist can send data out
    egress = cfg.url is not None or kind == "none" or cfg.egress is not None
    return server_toolset(conn, risk=Risk.parse(cfg.risk), only=cfg.tools, egress=egress)


def close_kept(keep: list[Closeable]) -> None:
    """Close what a server needed besides its connection (egress namespaces, sandboxes)."""
    for item in reversed(keep):
        item.close()
    keep.clear()


def mount_servers(config: Config, registry: ToolRegistry, *, audit: Any = None,
                  secrets: Any = None, inspection: Any = None) -> Mounted:
    """Connect every enabled server and register it as a toolset (its prefixed tools).

    A server that fails is skipped (its problem is kept for ``doctor`` and
    ``bastion mcp list``); the rest of bastion still starts. So is a server one of whose
    prefixed tool names is already taken (server ``a``'s ``b__c`` and server ``a__b``'s ``c``
    are both ``a__b__c``): the earlier one keeps the name, nothing is silently replaced.
    """
    mounted = Mounted()
    for cfg in config.mcp_servers:
        if not cfg.enabled:
            continue
        try:
            toolset = connect(cfg, config, mounted.keep, audit, secrets, inspection)
        except BastionError as exc:
            mounted.problems[cfg.name] = exc.user_text()
            log.warning("MCP server %s not mounted: %s", cfg.name, exc.user_text())
            continue
        clash = collision(toolset, registry)
        if clash is not None:
            toolset.close()
            mounted.problems[cfg.name] = clash
            log.warning("MCP server %s not mounted: %s", cfg.name, clash)
            continue
        registry.add_toolset(toolset)
        mounted.toolsets.append(toolset)
    return mounted


def collision(toolset: Toolset, registry: ToolRegistry) -> str | None:
    """Return why ``toolset``'s tools cannot be registered (a name taken), or ``None``."""
    seen: set[str] = set()
    for t in toolset.tools:
        if t.name in registry or t.name in seen:
            return (f"its tool name {t.name!r} is already taken (by another server's or a "
                    "built-in tool); rename one of the servers (mcp_servers[].name) so no "
                    "prefixed names collide")
        seen.add(t.name)
    return None

"""Build egress-controlled sandboxes for the tools (and MCP servers) that declare egress."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from pathlib import Path

from bastion.config.model import Config, EgressConfig
from bastion.errors import SandboxError
from bastion.security.egress.netns import EgressNetwork, Recorder, Uplink
from bastion.security.egress.rules import EgressRule
from bastion.security.egress.uplink import HostUplinkSpec
from bastion.security.sandbox.base import NetworkPolicy, Sandbox, SandboxSpec
from bastion.security.sandbox.factory import build_sandbox, limits_from_config
from bastion.tools.base import ProcessRunner


def uplink_from(config: Config) -> Uplink | HostUplinkSpec:
    """Return the operator's uplink namespace, or the settings of bastion's own uplink."""
    sec = config.security
    up = sec.egress_uplink
    if up is None:
        return HostUplinkSpec(sec.egress_subnet, tuple(sec.egress_dns))
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
                   cfg: EgressConfig, *, warm: int = 0) -> Sandbox:
    """Return a ``kind`` sandbox for ``spec`` whose network is ``net``."""
    spec = dataclasses.replace(spec, network=policy_for(net, cfg))
    box, problem = build_sandbox(kind, spec, warm=warm)
    if box is None:
        raise SandboxError(f"no sandbox for egress: {problem}")
    return box


def tool_runners(config: Config, workspace: Path, audit: Recorder | None,
                 tools: Collection[str] | None = None,
                 ) -> tuple[dict[str, ProcessRunner], list[Callable[[], None]], dict[str, str]]:
    """Return per-tool runners (own backend and/or egress), their closers, and problems.

    A tool listed in ``security.tool_sandboxes`` gets that backend; one listed in
    ``security.egress`` gets its own egress-controlled namespace. Each gets the
    ``security.warm_pool`` pre-started sandboxes where its backend has a pool (the closers
    end those before the namespace). A tool whose runner cannot be set up gets no entry and
    a problem; it then uses the default (network-less) sandbox, so it is never given more
    network than declared.
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
                box, problem = build_sandbox(kind, spec, warm=sec.warm_pool)
                if box is None:
                    raise SandboxError(problem or f"{kind} is unavailable")
            else:
                net = network_for(tool, cfg, config, audit)
                closers.append(net.close)
                box = egress_sandbox(kind, spec, net, cfg, warm=sec.warm_pool)
            runners[tool] = box
            pool = getattr(box, "warm_pool", None)
            if pool is not None:  # closers run in reverse: the pool ends before its netns
                closers.append(pool.shutdown)
            close = getattr(box, "close", None)
            if cfg is not None and close is not None:  # e.g. docker's holder of the netns
                closers.append(close)
        except SandboxError as exc:
            problems[tool] = exc.user_text()
    return runners, closers, problems


def readiness(config: Config) -> list[tuple[str, str, str, str]]:
    """Return ``bastion doctor``'s egress lines: (name, OK/WARN/FAIL, detail, fix)."""
    from bastion.security.egress import uplink
    from bastion.security.egress.netns import NETNS_DIR, problem

    sec = config.security
    users = sorted(sec.egress) + [f"mcp:{m.name}" for m in config.mcp_servers if m.egress]
    lines: list[tuple[str, str, str, str]] = []
    why = problem()
    if why:
        detail, _, fix = why.partition(" (fix: ")
        status = "FAIL" if users else "WARN"
        lines.append(("egress", status, f"{detail} (declared for: {', '.join(users) or '-'})",
                      fix.rstrip(")")))
        return lines
    lines.append(("egress", "OK", "nftables, dnsmasq, ip, nsenter present; root" +
                  (f"; declared for: {', '.join(users)}" if users else "; no tool declares it")
                  , ""))
    up = sec.egress_uplink
    if up is not None:
        ok = (NETNS_DIR / up.netns).exists()
        lines.append(("egress uplink", "OK" if ok else "FAIL",
                      f"operator namespace {up.netns} (resolver {up.resolver})"
                      + ("" if ok else " does not exist"),
                      "" if ok else f"ip netns add {up.netns} (and route it), or unset "
                      "security.egress_uplink"))
    else:
        try:
            dns = list(sec.egress_dns) or uplink.host_resolvers()
            subnet = uplink.pick_subnet(sec.egress_subnet, [*uplink.host_routes(), *dns])
            lines.append(("egress uplink", "OK",
                          f"automatic: veths from {subnet}, NAT in nft table "
                          f"inet {uplink.HOST_TABLE}<pid>, upstream DNS {', '.join(dns)}", ""))
        except SandboxError as exc:
            lines.append(("egress uplink", "FAIL" if users else "WARN", exc.message,
                          exc.fix or ""))
        fwd = uplink.forward_state()
        if fwd["prior"] is not None:
            lines.append(("ip_forward", "OK", f"{fwd['now']}: turned on by bastion "
                          f"(pids {fwd['owners']}), was {fwd['prior']}; restored when the last "
                          "exits", ""))
        elif fwd["now"] == 0:
            lines.append(("ip_forward", "OK", "0: bastion turns it on only while egress "
                          "namespaces exist (forwarding nothing else) and restores 0", ""))
        else:
            lines.append(("ip_forward", "OK", f"{fwd['now']} (already on; bastion leaves it)",
                          ""))
    left = uplink.stale()
    found = [n for names in left.values() for n in names]
    if found:
        lines.append(("egress leftovers", "WARN",
                      f"from bastion processes that are gone: {', '.join(found)}",
                      "they are removed at the next start with egress (or: ip netns del NAME; "
                      "ip link del NAME; nft delete table inet NAME)"))
    return lines

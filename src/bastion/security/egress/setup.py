"""Build egress-controlled sandboxes for the tools (and MCP servers) that declare egress."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.config.model import Config, EgressConfig
from bastion.errors import MissingExtraError, SandboxError
from bastion.security.approval import current_call
from bastion.security.egress.credproxy import (
    INSTALL,
    CredentialProxy,
    HttpRule,
    Inspector,
    ProxyPolicy,
)
from bastion.security.egress.netns import EgressNetwork, Recorder, Uplink
from bastion.security.egress.rules import EgressRule
from bastion.security.egress.uplink import HostUplinkSpec
from bastion.security.sandbox.base import NetworkPolicy, Sandbox, SandboxSpec
from bastion.security.sandbox.factory import build_sandbox, limits_from_config
from bastion.security.secrets.bound import PlaceholderBook
from bastion.security.secrets.resolver import tool_bindings
from bastion.tools.base import ProcessResult, ProcessRunner


def uplink_from(config: Config) -> Uplink | HostUplinkSpec:
    """Return the operator's uplink namespace, or the settings of bastion's own uplink."""
    sec = config.security
    up = sec.egress_uplink
    if up is None:
        return HostUplinkSpec(sec.egress_subnet, tuple(sec.egress_dns))
    return Uplink(up.netns, up.resolver)


@dataclass(frozen=True)
class Inspection:
    """What egress proxies need from the rest of bastion (all optional)."""

    book: PlaceholderBook | None = None  # live placeholders of bound secrets
    scanner: Any = None  # the redactor's secret scanner (held values included)
    pii: Callable[[Sequence[str]], Inspector | None] | None = None  # classes -> PII finder
    approver: Any = None  # the approval manager: decides requests held for a human
    approval_timeout_s: float = 120.0


def proxy_policy(rule: EgressRule, cfg: EgressConfig) -> ProxyPolicy:
    """Return the proxy's rules for an egress declaration."""
    return ProxyPolicy(rule, tuple(p for p in cfg.http_ports if p != 443), cfg.http2,
                       tuple(HttpRule(r.host.lower(), tuple(m.upper() for m in r.methods),
                                      tuple(r.paths)) for r in cfg.rules),
                       cfg.max_request_bytes, cfg.max_response_bytes, cfg.scan_outbound,
                       cfg.placeholder_elsewhere)


def network_for(subject: str, cfg: EgressConfig, config: Config,
                audit: Recorder | None, inspection: Inspection | None = None) -> EgressNetwork:
    """Create and start the egress namespace for ``subject`` (with its proxy if it has one).

    A subject gets the HTTP(S) proxy when its egress says ``inspect`` or when one of its
    secrets is bound to destinations (the proxy is what swaps the placeholder).
    """
    rule = EgressRule.create(cfg.domains, cfg.cidrs, cfg.ports, name=subject)
    proxy = None
    bound = bool(tool_bindings(subject, config.secrets.tools))
    if cfg.inspect or bound:
        ins = inspection or Inspection()
        proxy = CredentialProxy(subject, proxy_policy(rule, cfg), ins.book or PlaceholderBook(),
                                audit, scanner=ins.scanner,
                                inspect=ins.pii(cfg.pii) if ins.pii and cfg.pii else None,
                                approver=ins.approver,
                                approval_timeout_s=ins.approval_timeout_s)
    return EgressNetwork(rule, uplink_from(config), audit=audit, subject=subject,
                         proxy=proxy).start()


def policy_for(net: EgressNetwork, cfg: EgressConfig) -> NetworkPolicy:
    """Return the sandbox network policy that joins ``net``."""
    return NetworkPolicy(enabled=True, allow_domains=tuple(cfg.domains),
                         allow_cidrs=tuple(cfg.cidrs), allow_ports=tuple(cfg.ports),
                         netns_path=net.netns_path, resolv_conf=net.resolv_conf,
                         ca_bundle=net.proxy.ca_file if net.proxy is not None else None)


class ProxiedRunner:
    """A sandbox whose every command also gets the proxy's variables (proxy URL, CA bundle)."""

    def __init__(self, box: Sandbox, proxy: CredentialProxy) -> None:
        self.box = box
        self.proxy = proxy
        self.env = proxy.env()

    async def run(self, argv: list[str], *, stdin: bytes | None = None,
                  env: Mapping[str, str] | None = None, timeout_s: float | None = None
                  ) -> ProcessResult:
        """Run ``argv`` in the sandbox with the proxy's variables under the caller's.

        Meanwhile the proxy attributes what it holds for approval to the gateway's current
        tool call (session, call id, tool).
        """
        with self.proxy.serving(current_call()):
            return await self.box.run(argv, stdin=stdin, env={**self.env, **(env or {})},
                                      timeout_s=timeout_s)

    async def drain(self) -> None:
        """Wait until the sandbox's clean-ups of finished calls are done."""
        await self.box.drain()

    def close(self) -> None:
        """Close the sandbox (its warm pool and helpers)."""
        self.box.close()

    async def aclose(self) -> None:
        """Close the sandbox from async code."""
        await self.box.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.box, name)


def egress_sandbox(kind: str, spec: SandboxSpec, net: EgressNetwork,
                   cfg: EgressConfig, *, warm: int = 0) -> Sandbox:
    """Return a ``kind`` sandbox for ``spec`` whose network is ``net``."""
    spec = dataclasses.replace(spec, network=policy_for(net, cfg))
    box, problem = build_sandbox(kind, spec, warm=warm)
    if box is None:
        raise SandboxError(f"no sandbox for egress: {problem}")
    if net.proxy is not None:
        return ProxiedRunner(box, net.proxy)  # type: ignore[return-value]
    return box


def tool_runners(config: Config, workspace: Path, audit: Recorder | None,
                 tools: Collection[str] | None = None, inspection: Inspection | None = None,
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
                net = network_for(tool, cfg, config, audit, inspection)
                closers.append(net.close)
                box = egress_sandbox(kind, spec, net, cfg, warm=sec.warm_pool)
            runners[tool] = box
            # closers run in reverse: the box (its warm pool, docker's holder of the netns)
            # ends before its namespace
            closers.append(box.close)
        except (SandboxError, MissingExtraError) as exc:  # no runner: network-less default
            problems[tool] = exc.user_text()
    return runners, closers, problems


def secret_lines(config: Config) -> list[tuple[str, str, str, str]]:
    """Return ``bastion doctor``'s lines on how each tool secret is given to its tool."""
    import importlib.util

    lines: list[tuple[str, str, str, str]] = []
    proxy_ok = importlib.util.find_spec("mitmproxy") is not None
    for tool, entries in sorted(config.secrets.tools.items()):
        bound = tool_bindings(tool, config.secrets.tools)
        for env in sorted(entries):
            name = f"secret {tool}.{env}"
            if env not in bound:
                lines.append((name, "WARN", "plain env injection: the tool can read the secret",
                              f"bind it to its API: secrets.tools.{tool}.{env}: {{ref: ..., "
                              "hosts: [api.example.com]}"))
            elif tool not in config.security.egress:
                lines.append((name, "FAIL", "bound, but the tool declares no egress (the "
                              "placeholder cannot reach its host)",
                              f"add security.egress.{tool} with the bound hosts"))
            elif not proxy_ok:
                lines.append((name, "FAIL", "bound, but the egress proxy is not installed",
                              INSTALL))
            else:
                lines.append((name, "OK", "placeholder in the sandbox; swapped on the wire to "
                              + ", ".join(bound[env].destinations), ""))
    return lines


def readiness(config: Config) -> list[tuple[str, str, str, str]]:
    """Return ``bastion doctor``'s egress lines: (name, OK/WARN/FAIL, detail, fix)."""
    return _readiness(config) + secret_lines(config)


def _readiness(config: Config) -> list[tuple[str, str, str, str]]:
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

"""The egress allowlist as data, and what it becomes: an nftables ruleset and dnsmasq flags.

A domain entry covers the name and its sub-domains (``*.example.org`` and ``example.org``
alike); the DNS resolver in the sandbox's namespace answers only those names, and every
address it hands out enters an nftables set that the output chain accepts (on the allowed
ports only). Listed IPs/CIDRs are accepted directly on the same ports. Everything else is
rejected at once (so a request fails fast with "connection refused") and traced for the
audit log.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from bastion.errors import ConfigError

TABLE = "bastion_egress"
SET4 = "allow4"
SET6 = "allow6"
DNS_UID = 65534  # dnsmasq drops to nobody; only it may talk to the upstream resolver
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


@dataclass(frozen=True, slots=True)
class EgressRule:
    """Allowed domains, networks and TCP ports for one sandbox (tool or MCP server)."""

    domains: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()
    ports: tuple[int, ...] = (443,)
    name: str = "sandbox"

    @classmethod
    def create(cls, domains: list[str] | tuple[str, ...] = (), cidrs: list[str] |
               tuple[str, ...] = (), ports: list[int] | tuple[int, ...] = (443,),
               name: str = "sandbox") -> EgressRule:
        """Validate and normalise an allowlist (raises :class:`ConfigError`)."""
        norm = tuple(normalise_domain(d) for d in domains)
        nets = []
        for c in cidrs:
            try:
                nets.append(str(ipaddress.ip_network(c, strict=False)))
            except ValueError:
                raise ConfigError(f"egress for {name}: {c!r} is not an IP or CIDR") from None
        for p in ports:
            if not 0 < int(p) < 65536:
                raise ConfigError(f"egress for {name}: port {p} is out of range")
        if not ports:
            raise ConfigError(f"egress for {name}: list at least one port")
        return cls(norm, tuple(nets), tuple(int(p) for p in ports), name)

    def allows_name(self, qname: str) -> bool:
        """Return whether ``qname`` is covered by a domain entry."""
        q = qname.rstrip(".").lower()
        return any(q == d or q.endswith("." + d) for d in self.domains)


def normalise_domain(domain: str) -> str:
    """Return ``domain`` without a leading ``*.`` and trailing dot, validated."""
    d = domain.strip().lower().rstrip(".")
    if d.startswith("*."):
        d = d[2:]
    labels = d.split(".")
    if not d or not all(_LABEL.match(label) for label in labels):
        raise ConfigError(f"egress: {domain!r} is not a domain name",
                          fix="use names like api.example.com or *.example.org")
    return d


def _resolvers(resolver: str | Sequence[str]) -> list[str]:
    found = [resolver] if isinstance(resolver, str) else list(resolver)
    if not found:
        raise ConfigError("egress: no upstream DNS resolver",
                          fix="set security.egress_dns (or fix /etc/resolv.conf)")
    return found


def nft_ruleset(rule: EgressRule, resolver: str | Sequence[str]) -> str:
    """Return the ruleset loaded into the sandbox's namespace (``nft -f -``).

    ``resolver`` is the upstream DNS server (or several); only dnsmasq's uid may reach them.
    """
    ports = ", ".join(str(p) for p in rule.ports)
    v4 = [c for c in rule.cidrs if ":" not in c]
    v6 = [c for c in rule.cidrs if ":" in c]
    dns_rules = []
    for fam in ("ip", "ip6"):
        addrs = [r for r in _resolvers(resolver) if (":" in r) == (fam == "ip6")]
        if addrs:
            dst = addrs[0] if len(addrs) == 1 else "{ " + ", ".join(addrs) + " }"
            dns_rules += [f"    meta skuid {DNS_UID} {fam} daddr {dst} udp dport 53 accept",
                          f"    meta skuid {DNS_UID} {fam} daddr {dst} tcp dport 53 accept"]
    lines = [
        f"table inet {TABLE} {{",
        f"  set {SET4} {{ type ipv4_addr; flags timeout; timeout 1h; }}",
        f"  set {SET6} {{ type ipv6_addr; flags timeout; timeout 1h; }}",
        "  chain out {",
        "    type filter hook output priority 0; policy drop;",
        '    oifname "lo" accept',
        "    ct state established,related accept",
        *dns_rules,
        f"    ip daddr @{SET4} tcp dport {{ {ports} }} accept",
        f"    ip6 daddr @{SET6} tcp dport {{ {ports} }} accept",
    ]
    if v4:
        lines.append(f"    ip daddr {{ {', '.join(v4)} }} tcp dport {{ {ports} }} accept")
    if v6:
        lines.append(f"    ip6 daddr {{ {', '.join(v6)} }} tcp dport {{ {ports} }} accept")
    lines += [
        "    meta nftrace set 1 counter reject",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def dnsmasq_args(rule: EgressRule, resolver: str | Sequence[str], *, log_file: str,
                 pid_file: str) -> list[str]:
    """Return the dnsmasq command line for the sandbox's resolver on 127.0.0.1:53.

    Only the allowlisted names are forwarded (to each upstream ``resolver``); every other
    name is refused without leaving the namespace.
    """
    args = [
        "dnsmasq", "--no-resolv", "--no-hosts", "--no-poll", "--listen-address=127.0.0.1",
        "--bind-interfaces", "--except-interface=nonexistent", "--cache-size=0",
        "--log-queries", f"--log-facility={log_file}", f"--pid-file={pid_file}",
        "--user=nobody", "--group=nogroup",
    ]
    for d in rule.domains:
        args += [f"--server=/{d}/{r}" for r in _resolvers(resolver)]
        args.append(f"--nftset=/{d}/4#inet#{TABLE}#{SET4},6#inet#{TABLE}#{SET6}")
    return args


@dataclass(slots=True)
class Blocked:
    """One refused connection attempt, parsed from an nft trace line."""

    daddr: str
    dport: int | None
    protocol: str
    raw: str = field(repr=False, default="")


_TRACE = re.compile(r"ip6? daddr (?P<daddr>\S+).*?ip6? (?:protocol|nexthdr) (?P<proto>\w+)"
                    r"(?:.*?(?:tcp|udp) dport (?P<dport>\d+))?")


def parse_trace(line: str) -> Blocked | None:
    """Parse an ``nft monitor trace`` *packet* line of the reject rule's chain."""
    if " packet: " not in line:
        return None
    m = _TRACE.search(line)
    if not m:
        return None
    dport = int(m["dport"]) if m["dport"] else None
    return Blocked(m["daddr"], dport, m["proto"], line.strip())


_QUERY = re.compile(r"query\[(?P<type>\w+)\] (?P<name>\S+) from")


def parse_query(line: str) -> tuple[str, str] | None:
    """Parse a dnsmasq ``query[A] name from ...`` log line into (name, type)."""
    m = _QUERY.search(line)
    return (m["name"], m["type"]) if m else None

"""The egress allowlist as data, and what it becomes: an nftables ruleset and dnsmasq flags.

A domain entry covers the name and its sub-domains (``*.example.org`` and ``example.org``
alike); the DNS resolver in the sandbox's namespace answers only those names, and every
address it hands out enters an nftables set that the output chain accepts (on the allowed
ports only). Listed IPs/CIDRs are accepted directly on the same ports. Everything else is
rejected at once (so a request fails fast with "connection refused") and traced for the
audit log, with the name of the rule that refused it.

DNS rebinding: an allowlisted name that resolves to a private, loopback, link-local, CGNAT or
metadata address (an attacker's record under a wildcard, a CDN-hosted name) must not open
the LAN to the sandbox. dnsmasq drops such answers (``--stop-dns-rebind``, localhost too),
and the output chain rejects every non-public destination (:mod:`bastion.addresses`) that is
not in the rule's ``cidrs`` before it looks at the resolved addresses. Listing a non-public
network in ``cidrs`` is how an operator allows a LAN service; then the rule's names may
resolve to non-public addresses too, and the firewall still admits only the listed ones.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from bastion.addresses import NON_PUBLIC_V4, NON_PUBLIC_V6
from bastion.errors import ConfigError

TABLE = "bastion_egress"
SET4 = "allow4"
SET6 = "allow6"
DNS_UID = 65534  # dnsmasq drops to nobody; only it may talk to the upstream resolver
RULE_NON_PUBLIC = "non-public"  # nft rule comments: the audit's ``rule`` of a refusal
RULE_NOT_ALLOWED = "not-allowlisted"
RULE_DNS_DIRECT = "dns-bypass"
PROXY_MARK = 0xB57  # = credproxy.MARK: the proxy's own DNS socket
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
            except ValueError as exc:
                raise ConfigError(f"egress for {name}: {c!r} is not an IP or CIDR") from exc
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

    @property
    def lan_cidrs(self) -> tuple[str, ...]:
        """The listed networks that overlap a non-public range (the operator's LAN opt-in)."""
        return tuple(c for c in self.cidrs if _overlaps_non_public(c))


def non_public(version: int) -> list[str]:
    """Return the non-public ranges of IP ``version`` (4 or 6), collapsed, as CIDR strings."""
    table = NON_PUBLIC_V4 if version == 4 else NON_PUBLIC_V6
    nets = [ipaddress.ip_network(n) for n, _ in table]
    return [str(n) for n in ipaddress.collapse_addresses(nets)]  # type: ignore[type-var]


def _overlaps_non_public(cidr: str) -> bool:
    net = ipaddress.ip_network(cidr, strict=False)
    return any(net.overlaps(ipaddress.ip_network(n))
               for n in non_public(net.version))


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


def nft_ruleset(rule: EgressRule, resolver: str | Sequence[str], *, proxied: bool = False
                ) -> str:
    """Return the ruleset loaded into the sandbox's namespace (``nft -f -``).

    ``resolver`` is the upstream DNS server (or several); only dnsmasq's uid may reach them.
    ``proxied``: all traffic goes through bastion's proxy on the namespace's loopback, so
    nothing is accepted towards the allowlist directly (raw TCP, SSH... are refused here).
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
        # proxied: the sandbox asks bastion's DNS filter; only its marked socket reaches dnsmasq
        *([f"    ip daddr 127.0.0.1 meta l4proto {{ tcp, udp }} th dport 53 meta mark != "
           f'{PROXY_MARK:#x} meta nftrace set 1 counter reject comment "{RULE_DNS_DIRECT}"']
          if proxied else []),
        '    oifname "lo" accept',
        "    ct state established,related accept",
        *dns_rules,
    ]
    if v4 and not proxied:
        lines.append(f"    ip daddr {{ {', '.join(v4)} }} tcp dport {{ {ports} }} accept")
    if v6 and not proxied:
        lines.append(f"    ip6 daddr {{ {', '.join(v6)} }} tcp dport {{ {ports} }} accept")
    lines += [  # before the resolved sets: a name that resolves to the LAN opens nothing
        f"    ip daddr {{ {', '.join(non_public(4))} }} meta nftrace set 1 counter reject "
        f'comment "{RULE_NON_PUBLIC}"',
        f"    ip6 daddr {{ {', '.join(non_public(6))} }} meta nftrace set 1 counter reject "
        f'comment "{RULE_NON_PUBLIC}"',
        *([] if proxied else [f"    ip daddr @{SET4} tcp dport {{ {ports} }} accept",
                              f"    ip6 daddr @{SET6} tcp dport {{ {ports} }} accept"]),
        f'    meta nftrace set 1 counter reject comment "{RULE_NOT_ALLOWED}"',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def dnsmasq_args(rule: EgressRule, resolver: str | Sequence[str], *, pid_file: str = "",
                 log_file: str = "-") -> list[str]:
    """Return the dnsmasq command line for the sandbox's resolver on 127.0.0.1:53.

    Only the allowlisted names are forwarded (to each upstream ``resolver``); every other
    name is refused without leaving the namespace. Answers in private, loopback and
    link-local ranges are dropped (``--stop-dns-rebind``) unless the rule lists a non-public
    network in ``cidrs``. dnsmasq stays in the foreground and logs to stderr (``-``), a pipe
    only bastion reads, so no other local user can write into the audit trail. No pid file
    by default (dnsmasq hands it to its own uid, so that user could name any process in it).
    """
    args = [
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
        "--listen-address=127.0.0.1", "--bind-interfaces", "--except-interface=nonexistent",
        "--cache-size=0", "--log-queries", f"--log-facility={log_file}",
        f"--pid-file={pid_file}", "--user=nobody", "--group=nogroup", "--stop-dns-rebind",
    ]
    if rule.lan_cidrs and rule.domains:  # the firewall still admits only the listed networks
        args.append("--rebind-domain-ok=/" + "/".join(rule.domains) + "/")
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
    trace_id: str = ""
    rule: str = ""  # the comment of the rule that refused it (RULE_*), from the next line


_TRACE = re.compile(r"ip6? daddr (?P<daddr>\S+).*?ip6? (?:protocol|nexthdr) (?P<proto>\w+)"
                    r"(?:.*?(?:tcp|udp) dport (?P<dport>\d+))?")
_TRACE_ID = re.compile(r"^trace id (?P<id>\w+) ")
_TRACE_RULE = re.compile(r'^trace id (?P<id>\w+) .* rule .*comment "(?P<rule>[^"]+)" '
                         r"\(verdict \w+\)")


def parse_trace(line: str) -> Blocked | None:
    """Parse an ``nft monitor trace`` *packet* line of the reject rule's chain."""
    if " packet: " not in line:
        return None
    m = _TRACE.search(line)
    if not m:
        return None
    dport = int(m["dport"]) if m["dport"] else None
    tid = _TRACE_ID.match(line)
    return Blocked(m["daddr"], dport, m["proto"], line.strip(), tid["id"] if tid else "")


def parse_trace_rule(line: str) -> tuple[str, str] | None:
    """Parse the *rule* line that follows a packet line: (trace id, the rule's comment)."""
    m = _TRACE_RULE.match(line.strip())
    return (m["id"], m["rule"]) if m else None


_QUERY = re.compile(r"query\[(?P<type>\w+)\] (?P<name>\S+) from")
_REBIND = re.compile(r"possible DNS-rebind attack detected: (?P<name>\S+)")


def parse_query(line: str) -> tuple[str, str] | None:
    """Parse a dnsmasq ``query[A] name from ...`` log line into (name, type)."""
    m = _QUERY.search(line)
    return (m["name"], m["type"]) if m else None


def parse_rebind(line: str) -> str | None:
    """Return the name of a dnsmasq ``possible DNS-rebind attack detected`` line."""
    m = _REBIND.search(line)
    return m["name"] if m else None

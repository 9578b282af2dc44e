"""Which IP addresses are public: one definition for web_fetch's SSRF guard and the egress firewall.

Python's ``ipaddress.is_global`` (3.11) still calls some non-public ranges global: site-local
``fec0::/10``, ``192.0.0.0/24`` beyond its first /29, and every 6to4 address (``2002::/16``),
which a 6to4 relay turns into the IPv4 address it embeds (``2002:a9fe:a9fe::1`` is
169.254.169.254, the cloud metadata service). So the ranges of the IANA special-purpose
registries that are not globally reachable are listed here explicitly, and tunnel addresses
(IPv4-mapped, 6to4, Teredo, NAT64) are unwrapped and judged by the IPv4 address inside.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: IPv4 ranges that are never a public destination (RFC 6890 and successors, plus
#: multicast and the reserved 240/4). CGNAT (100.64/10) and link-local (cloud metadata at
#: 169.254.169.254) included.
NON_PUBLIC_V4: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)

#: IPv6 ranges that are never a public destination. The tunnel prefixes (6to4, Teredo, NAT64)
#: are listed for the firewall, which cannot look inside them; :func:`address_problem` unwraps
#: them instead. ULA (fc00::/7) includes AWS's metadata address fd00:ec2::254.
NON_PUBLIC_V6: tuple[tuple[str, str], ...] = (
    ("::/8", "reserved (unspecified, loopback, IPv4-compatible, IPv4-mapped)"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignment (Teredo 2001::/32)"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 segment identifiers"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)

_V4 = tuple((ipaddress.IPv4Network(n), label) for n, label in NON_PUBLIC_V4)
_V6 = tuple((ipaddress.IPv6Network(n), label) for n, label in NON_PUBLIC_V6)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """Return (tunnel kind, IPv4 address) when ``ip`` carries an IPv4 destination inside it."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def listed_range(ip: IPAddress) -> str | None:
    """Return the label of the non-public range listed here that holds ``ip``, if any."""
    table = _V4 if isinstance(ip, ipaddress.IPv4Address) else _V6
    for net, label in table:
        if ip in net:
            return f"{label} {net}"
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Return why ``ip`` is not a public destination, or ``None`` when it is.

    IPv4-mapped, 6to4 and NAT64 addresses are judged by the IPv4 address they embed; Teredo
    is always refused (its client address is obfuscated and its relay is arbitrary).
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_v4(ip)
        if inner is not None:
            kind, v4 = inner
            if kind == "IPv4-mapped":
                return address_problem(v4)
            if kind == "Teredo":
                return f"{ip} is a Teredo tunnel address"
            why = address_problem(v4)
            if why is not None:
                return f"{ip} is a {kind} address embedding {v4} ({why})"
            return None  # a public IPv4 address behind a 6to4 relay or NAT64 gateway
    for attr, label in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return f"{ip} is a {label} address"
    listed = listed_range(ip)
    if listed is not None or not ip.is_global:
        return f"{ip} is not a globally routable address" + (f" ({listed})" if listed else "")
    return None


# Cloud instance-metadata endpoints outside link-local (Alibaba, AWS's IPv6 one).
_METADATA = (ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254"))


def is_metadata(ip: IPAddress) -> bool:
    """Return whether ``ip`` is link-local or a cloud metadata endpoint (169.254.169.254 ...).

    Those answer with instance credentials, so reaching them takes its own switch
    (``security.allow_metadata``), never just ``allow_private_network``. IPv4-mapped, 6to4 and
    NAT64 forms are judged by the IPv4 address they embed.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_v4(ip)
        if inner is not None:
            return is_metadata(inner[1])
    return ip.is_link_local or ip in _METADATA

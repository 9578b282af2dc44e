"""bastion's own uplink for egress namespaces, used when ``security.egress_uplink`` is unset.

What it changes on the host (all named with this process's pid, all undone on close)::

    host (this network namespace)                       sandbox netns "bst-PID-N"
      veth "bhPIDxN"  10.213.x.y+1/30  ----------------  veth "eg0" 10.213.x.y+2/30, default route
      nftables table "inet bastion_egress_PID":
        forward: from our veths out; replies back in; nothing new into a sandbox;
                 everything else dropped only if bastion had to turn ip_forward on
        input:   nothing new from a sandbox to the host itself
        postrouting (nat): masquerade our subnet on the way out
      net.ipv4.ip_forward = 1 only if it was 0 (the prior value is recorded and restored)

The private subnet (``security.egress_subnet``: ``auto`` or a CIDR) is checked against the
host's routes and addresses, so it never shadows a network the host already reaches. Upstream
DNS (``security.egress_dns``, default: the host's /etc/resolv.conf) is where each sandbox's
dnsmasq forwards the allowlisted names -- and only those. Nothing else on the host (other
tables, chains, interfaces) is touched.

A process killed before it could clean up leaves these behind; every start removes the
leftovers whose pid is gone (:func:`cleanup_stale`), and ``bastion doctor`` lists them.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bastion.errors import SandboxError
from bastion.security.egress.rules import non_public

STATE_DIR = Path("/run/bastion-egress")
HOST_TABLE = "bastion_egress_"  # + pid: the host table of one bastion process
NETNS_PREFIX = "bst-"  # + pid-N: a sandbox namespace
HOST_VETH = "bh"  # + pid x N: the host end of a sandbox's veth
UPLINK_VETH = "bu"  # + pid x N: the operator-uplink end (inside the operator's namespace)
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
CANDIDATES = tuple(f"10.{b}.0.0/16" for b in range(213, 250)) + ("172.31.0.0/16",)
RESOLV_FILES = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))
_NETNS = re.compile(rf"^{NETNS_PREFIX}(\d+)-\d+$")
_VETH = re.compile(rf"^(?:{HOST_VETH}|{UPLINK_VETH})(\d+)x\d+$")
_TABLE = re.compile(rf"^{HOST_TABLE}(\d+)$")
LAN4 = "lan4"  # host set: (veth . network) pairs that a rule's non-public cidrs allow


@dataclass(frozen=True, slots=True)
class HostUplinkSpec:
    """Settings of the automatic uplink (from ``security.egress_subnet`` / ``egress_dns``).

    Args:
        subnet: ``auto`` (the first free /16 of :data:`CANDIDATES`) or a private IPv4 CIDR.
        dns: Upstream DNS servers; empty means the host's /etc/resolv.conf.

    """

    subnet: str = "auto"
    dns: tuple[str, ...] = ()


def _ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise SandboxError(f"egress uplink: ip {' '.join(args[:5])}: "
                           f"{proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def _nft(*args: str, input_text: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(["nft", *args], input=input_text, capture_output=True, text=True,
                          timeout=20)
    if check and proc.returncode != 0:
        raise SandboxError(f"egress uplink: nft {' '.join(args[:4])}: "
                           f"{proc.stderr.strip() or proc.returncode}",
                           fix="check that nftables works here: nft list tables")
    return proc.stdout


def alive(pid: int) -> bool:
    """Return whether process ``pid`` exists (a leftover of a live process is not stale)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- pure helpers (unit-tested) ---------------------------------------------------------------


def parse_resolvers(text: str) -> list[str]:
    """Return the usable ``nameserver`` addresses of a resolv.conf (no loopback, no scope)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "nameserver":
            continue
        try:
            addr = ipaddress.ip_address(parts[1].split("%")[0])
        except ValueError:
            continue
        if addr.version == 4 and not addr.is_loopback and not addr.is_unspecified:
            out.append(str(addr))
    return out


def host_resolvers(files: Sequence[Path] = RESOLV_FILES) -> list[str]:
    """Return the host's upstream DNS servers (IPv4, not loopback) or raise a clear error."""
    for path in files:
        with contextlib.suppress(OSError):
            found = parse_resolvers(path.read_text())
            if found:
                return found
    raise SandboxError(
        "egress: the host's /etc/resolv.conf names no DNS server a sandbox can reach "
        "(only loopback resolvers)",
        fix="set security.egress_dns: [IP of an upstream DNS server]",
    )


def pick_subnet(wanted: str, taken: Iterable[str]) -> ipaddress.IPv4Network:
    """Return ``wanted`` (or, for ``auto``, the first candidate) that overlaps no ``taken`` net.

    Raises:
        SandboxError: The subnet collides with a host route/address, or none is free.

    """
    nets = []
    for t in taken:
        with contextlib.suppress(ValueError):
            net = ipaddress.ip_network(t, strict=False)
            if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
                nets.append(net)
    options = CANDIDATES if wanted == "auto" else (wanted,)
    for option in options:
        cand = ipaddress.IPv4Network(option, strict=False)
        clash = next((n for n in nets if cand.overlaps(n)), None)
        if clash is None:
            return cand
        if wanted != "auto":
            raise SandboxError(
                f"egress subnet {cand} overlaps the host's {clash}",
                fix="set security.egress_subnet to an unused private range, or to auto",
            )
    raise SandboxError("egress: every candidate subnet overlaps a host route",
                       fix="set security.egress_subnet to an unused private /16")


def host_ruleset(pid: int, subnet: str, *, forward_was_off: bool,
                 resolvers: Sequence[str] = ()) -> str:
    """Return the host-side table of process ``pid`` (``nft -f -``).

    Sandbox traffic to a non-public address (private, link-local and cloud metadata, CGNAT,
    ...) is dropped here too, as a second layer behind each namespace's own firewall: only
    DNS to the upstream ``resolvers`` and the IPv4 networks an egress rule lists in
    ``cidrs`` (elements of the ``lan4`` set, keyed by the sandbox's veth) pass. (Sandboxes
    have no routable IPv6 address; their IPv6 is dropped here all the same.)
    """
    ours = f'"{HOST_VETH}{pid}x*"'
    dns = [r for r in resolvers if ":" not in r]
    lines = [
        f"table inet {HOST_TABLE}{pid} {{",
        f"  set {LAN4} {{ type ifname . ipv4_addr; flags interval; }}",
        "  chain forward {",
        "    type filter hook forward priority 0; policy accept;",
    ]
    if dns:
        lines += [f"    iifname {ours} ip saddr {subnet} ip daddr {{ {', '.join(dns)} }} "
                  f"{proto} dport 53 accept" for proto in ("udp", "tcp")]
    lines += [
        f"    iifname {ours} ip saddr {subnet} iifname . ip daddr @{LAN4} accept",
        f"    iifname {ours} ip daddr {{ {', '.join(non_public(4))} }} counter drop",
        f"    iifname {ours} ip6 daddr {{ {', '.join(non_public(6))} }} counter drop",
        f"    iifname {ours} ip saddr {subnet} accept",
        f"    oifname {ours} ct state established,related accept",
        f"    iifname {ours} drop",  # spoofed sources
        f"    oifname {ours} drop",  # nothing new into a sandbox
    ]
    if forward_was_off:  # bastion turned routing on: everything else stays unrouted, as before
        # (another bastion process's veths are judged by its own table, not dropped here)
        lines.append(f'    iifname != "{HOST_VETH}*" oifname != "{HOST_VETH}*" drop')
    lines += [
        "  }",
        "  chain input {",
        "    type filter hook input priority 0; policy accept;",
        f"    iifname {ours} ct state established,related accept",
        f"    iifname {ours} drop",  # a sandbox never reaches the host's own services
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    ip saddr {subnet} oifname != {ours} masquerade",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def owner_pid(name: str) -> int | None:
    """Return the bastion pid encoded in a namespace, veth or table name (else None)."""
    for pattern in (_NETNS, _VETH, _TABLE):
        m = pattern.match(name)
        if m:
            return int(m[1])
    return None


# -- host state -----------------------------------------------------------------------------------


def host_routes() -> list[str]:
    """Return every IPv4 route destination and address prefix of this namespace."""
    out: list[str] = []
    with contextlib.suppress(ValueError, SandboxError):
        for r in json.loads(_ip("-j", "-4", "route", "show", "table", "all") or "[]"):
            dst = r.get("dst", "")
            if dst and dst != "default":
                out.append(dst if "/" in dst else f"{dst}/32")
    with contextlib.suppress(ValueError, SandboxError):
        for link in json.loads(_ip("-j", "-4", "addr") or "[]"):
            for a in link.get("addr_info", []):
                out.append(f"{a['local']}/{a['prefixlen']}")
    return out


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _live_owners() -> list[int]:
    pids = []
    for f in STATE_DIR.glob("*.json"):
        with contextlib.suppress(ValueError):
            pid = int(f.stem)
            if alive(pid):
                pids.append(pid)
    return pids


def forward_state() -> dict[str, object]:
    """Return ip_forward now, and what bastion recorded about it (for ``bastion doctor``)."""
    state: dict[str, object] = {"now": None, "prior": None, "owners": []}
    with contextlib.suppress(OSError, ValueError):
        state["now"] = int(FORWARD.read_text().strip())
    with contextlib.suppress(OSError, ValueError):
        state["prior"] = int((STATE_DIR / "ip_forward.prior").read_text().strip())
    if STATE_DIR.is_dir():
        state["owners"] = _live_owners()
    return state


def _restore_forward_if_last() -> None:
    """Put ip_forward back to its recorded prior value when no live bastion uplink remains."""
    prior_file = STATE_DIR / "ip_forward.prior"
    if not prior_file.exists() or _live_owners():
        return
    with contextlib.suppress(OSError, ValueError):
        FORWARD.write_text(prior_file.read_text().strip() + "\n")
    prior_file.unlink(missing_ok=True)


def stale() -> dict[str, list[str]]:
    """Return bastion's leftovers of dead processes: namespaces, host veths, nft tables."""
    found: dict[str, list[str]] = {"netns": [], "veth": [], "table": []}
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir("/run/netns")):
            pid = owner_pid(name)
            if name.startswith(NETNS_PREFIX) and pid is not None and not alive(pid):
                found["netns"].append(name)
    with contextlib.suppress(ValueError, SandboxError, FileNotFoundError):
        for link in json.loads(_ip("-j", "link", check=False) or "[]"):
            name = link.get("ifname", "")
            pid = owner_pid(name)
            if name.startswith(HOST_VETH) and pid is not None and not alive(pid):
                found["veth"].append(name)
    with contextlib.suppress(SandboxError, FileNotFoundError):
        for line in _nft("list", "tables", check=False).splitlines():
            name = line.split()[-1] if line.startswith("table inet ") else ""
            pid = owner_pid(name)
            if name.startswith(HOST_TABLE) and pid is not None and not alive(pid):
                found["table"].append(name)
    return found


def cleanup_stale() -> dict[str, list[str]]:
    """Remove what bastion processes that are gone left behind; returns what was removed."""
    with _locked():
        found = stale()
        for ns in found["netns"]:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                  timeout=10).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
        for veth in found["veth"]:
            _ip("link", "del", veth, check=False)
        for table in found["table"]:
            _nft("delete", "table", "inet", table, check=False)
        for f in STATE_DIR.glob("*.json"):
            with contextlib.suppress(ValueError):
                if not alive(int(f.stem)):
                    f.unlink(missing_ok=True)
        _restore_forward_if_last()
    return found


@dataclass
class HostUplink:
    """One bastion process's host side: a subnet, an nft table, a /30 per namespace."""

    spec: HostUplinkSpec
    pid: int = field(default_factory=os.getpid)

    def __post_init__(self) -> None:
        self.subnet: ipaddress.IPv4Network | None = None
        self._used: set[int] = set()
        self.users = 0

    @property
    def table(self) -> str:
        """The host nft table's name."""
        return f"{HOST_TABLE}{self.pid}"

    def start(self) -> None:
        """Pick the subnet, load the table, turn ip_forward on if it is off (recorded)."""
        with _locked():
            dns = list(self.spec.dns)
            if not dns:
                with contextlib.suppress(SandboxError):
                    dns = host_resolvers()
            self.subnet = pick_subnet(self.spec.subnet, [*host_routes(), *dns])
            prior = STATE_DIR / "ip_forward.prior"
            # off now, or turned on by another bastion process (then its prior value counts)
            forward_off = (FORWARD.read_text().strip() == "0"
                           or (prior.exists() and prior.read_text().strip() == "0"))
            (STATE_DIR / f"{self.pid}.json").write_text(json.dumps(
                {"pid": self.pid, "subnet": str(self.subnet), "table": self.table}))
            try:
                _nft("-f", "-", input_text=host_ruleset(self.pid, str(self.subnet),
                                                        forward_was_off=forward_off,
                                                        resolvers=dns))
                if forward_off:
                    if not prior.exists():
                        prior.write_text("0\n")
                    FORWARD.write_text("1\n")
            except BaseException:
                self._teardown_locked()
                raise

    def allocate(self) -> tuple[int, str, str]:
        """Return (index, host address, sandbox address) of a free /30."""
        with _LOCK:
            return self._allocate()

    def _allocate(self) -> tuple[int, str, str]:
        assert self.subnet is not None
        slots = self.subnet.num_addresses // 4
        for i in range(slots):
            if i not in self._used:
                self._used.add(i)
                base = self.subnet.network_address + 4 * i
                return i, str(base + 1), str(base + 2)
        raise SandboxError(f"egress subnet {self.subnet} is full",
                           fix="set security.egress_subnet to a larger range")

    def free(self, index: int) -> None:
        """Give a /30 back."""
        with _LOCK:
            self._used.discard(index)

    def allow_lan(self, veth: str, cidrs: Sequence[str], *, add: bool = True) -> None:
        """Let traffic from ``veth`` reach the non-public IPv4 ``cidrs`` (``add=False``: undo)."""
        v4 = [c for c in cidrs if ":" not in c]
        if not v4:
            return
        elements = ", ".join(f'"{veth}" . {c}' for c in v4)
        _nft("add" if add else "delete", "element", "inet", self.table, LAN4,
             f"{{ {elements} }}", check=add)

    def close(self) -> None:
        """Delete the table and restore ip_forward when this was the last bastion uplink."""
        with _locked():
            self._teardown_locked()

    def _teardown_locked(self) -> None:
        _nft("delete", "table", "inet", self.table, check=False)
        (STATE_DIR / f"{self.pid}.json").unlink(missing_ok=True)
        _restore_forward_if_last()


_LOCK = threading.RLock()
_HOST: HostUplink | None = None
_CLEANED = False


def acquire(spec: HostUplinkSpec) -> HostUplink:
    """Return this process's host uplink (started on first use; one per process)."""
    global _HOST
    with _LOCK:
        clean_once()
        if _HOST is None:
            host = HostUplink(spec)
            host.start()
            _HOST = host
        elif _HOST.spec.subnet != spec.subnet:
            raise SandboxError(
                f"egress subnet {spec.subnet} requested while {_HOST.subnet} is in use",
                fix="use one security.egress_subnet per bastion process")
        _HOST.users += 1
        return _HOST


def release(host: HostUplink) -> None:
    """Drop one user; the last one tears the host side down."""
    global _HOST
    with _LOCK:
        host.users -= 1
        if host.users <= 0:
            host.close()
            if _HOST is host:
                _HOST = None


def clean_once() -> None:
    """Remove stale leftovers once per process (at the first egress namespace)."""
    global _CLEANED
    with _LOCK:
        if not _CLEANED:
            _CLEANED = True
            cleanup_stale()

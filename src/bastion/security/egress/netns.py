"""A sandbox's own network namespace with its egress enforced inside it.

Layout (every piece is created here and removed on :meth:`EgressNetwork.close`)::

    sandbox netns "bst-PID-N"                     uplink: the host (automatic) or a netns
      lo, resolver 127.0.0.1:53 (dnsmasq)          |
      veth "eg0" a.b.c.d+2/30  ------------------  veth a.b.c.d+1/30 -> NAT/routing onward
      nftables: output policy drop; lo, established, DNS from dnsmasq's uid to the upstream
      resolvers, @allow4/@allow6 (filled by dnsmasq --nftset) and listed CIDRs on the allowed
      ports; everything else: traced + rejected

The uplink is either bastion's own (:mod:`bastion.security.egress.uplink`: a veth to the host,
masquerade and forwarding in bastion's own nftables table; the default) or a namespace the
operator made (``security.egress_uplink``). Sandboxed commands join the namespace with
``nsenter --net=/run/netns/bst-PID-N`` (bwrap keeps it with ``--share-net``; gVisor uses
``--network=host`` so its sockets pass the same nftables; podman uses ``--network ns:PATH``).
Every DNS query and every answer refused as DNS rebinding (from dnsmasq's log, read over a
pipe from its stderr: no file another local user could append forged lines to) and every
rejected connection with the rule that rejected it (from ``nft monitor trace``) is written to
the audit log. Needs root (CAP_NET_ADMIN), ``ip``, ``nft``, ``dnsmasq`` and ``nsenter``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bastion.errors import SandboxError
from bastion.security.egress import uplink as host_uplink
from bastion.security.egress.credproxy import CredentialProxy
from bastion.security.egress.rules import (
    Blocked,
    EgressRule,
    dnsmasq_args,
    nft_ruleset,
    parse_query,
    parse_rebind,
    parse_trace,
    parse_trace_rule,
)
from bastion.security.egress.uplink import HostUplink, HostUplinkSpec, host_resolvers

NETNS_DIR = Path("/run/netns")
TOOLS = ("ip", "nft", "dnsmasq", "nsenter")
FIX = "apt-get install iproute2 nftables dnsmasq util-linux; egress control needs root"


class Recorder(Protocol):
    """Where egress events go (``AuditLog.record``)."""

    def record(self, kind: str, *, actor: str | None = None, tool: str | None = None,
               decision: str | None = None, detail: Any = None) -> int:
        """Write one event."""
        ...


@dataclass(frozen=True, slots=True)
class Uplink:
    """Where allowed traffic leaves the sandbox: a network namespace and its DNS resolver.

    Args:
        netns: Name of an existing namespace under /run/netns that routes onward (a router
            namespace with NAT to the outside, or, in tests, one that hosts the services).
        resolver: Address of the upstream DNS server, reachable from ``netns``.

    """

    netns: str
    resolver: str


def _multicast(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_multicast
    except ValueError:
        return False


def problem() -> str | None:
    """Return why egress control cannot run here, or ``None``."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (fix: {FIX})"
    if os.geteuid() != 0:
        return ("egress control needs root to create network namespaces and nftables "
                "(fix: run bastion as root, or drop security.egress)")
    return None


_SEQ = itertools.count()


def _next_name() -> str:
    return f"{host_uplink.NETNS_PREFIX}{os.getpid()}-{next(_SEQ) % 100000}"


def _run(*argv: str, input_text: str | None = None) -> None:
    proc = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise SandboxError(f"egress setup failed: {' '.join(argv[:6])}: "
                           f"{proc.stderr.strip() or proc.returncode}")


@dataclass
class EgressNetwork:
    """One egress-controlled namespace for one subject (a tool or an MCP server)."""

    rule: EgressRule
    uplink: Uplink | HostUplinkSpec = field(default_factory=HostUplinkSpec)
    audit: Recorder | None = None
    subject: str = "sandbox"
    name: str = field(default_factory=_next_name)
    blocked: list[Blocked] = field(default_factory=list)
    queries: list[tuple[str, str, bool]] = field(default_factory=list)  # name, type, allowed
    proxy: CredentialProxy | None = None  # not started: start() does (HTTP(S) only, then)

    def __post_init__(self) -> None:
        self._state = Path(tempfile.mkdtemp(prefix=f"bastion-{self.name}-"))
        self._state.chmod(0o755)
        self._procs: list[subprocess.Popen[str]] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._started = False
        self.address = ""
        self.gateway = ""
        self.resolvers: tuple[str, ...] = ()
        self._host: HostUplink | None = None
        self._slot: int | None = None
        self._veth = ""
        self._outer: tuple[str, str | None] | None = None  # our end of the veth, its namespace

    @property
    def netns_path(self) -> str:
        """The namespace file processes join."""
        return str(NETNS_DIR / self.name)

    @property
    def resolv_conf(self) -> Path:
        """A resolv.conf pointing at the namespace's resolver (bind it into the sandbox)."""
        return self._state / "resolv.conf"

    def wrap(self, argv: list[str]) -> list[str]:
        """Return ``argv`` prefixed so it runs inside this namespace."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def start(self) -> EgressNetwork:
        """Create the namespace, wire it to the uplink, load nftables, start the resolver."""
        why = problem()
        if why:
            raise SandboxError(f"egress control unavailable: {why}")
        host_uplink.clean_once()
        if isinstance(self.uplink, Uplink):
            if not (NETNS_DIR / self.uplink.netns).exists():
                raise SandboxError(
                    f"egress uplink namespace {self.uplink.netns!r} does not exist",
                    fix="create it (ip netns add ...) or unset security.egress_uplink "
                        "to let bastion set up its own")
            self.resolvers = (self.uplink.resolver,)
        else:
            self.resolvers = self.uplink.dns or tuple(host_resolvers())
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        self._started = True
        return self

    def _create(self) -> None:
        ns = self.name
        _run("ip", "netns", "add", ns)
        inner, seq = "eg0", ns.rsplit("-", 1)[1]
        if isinstance(self.uplink, Uplink):  # the operator's router namespace
            up: str | None = self.uplink.netns
            outer = f"{host_uplink.UPLINK_VETH}{os.getpid()}x{seq}"
            k = random.randrange(1, 16383)
            base = ipaddress.IPv4Address("10.213.0.0") + 4 * k
            self.gateway, self.address = str(base + 1), str(base + 2)
        else:  # bastion's own: a veth to the host, NAT and forwarding in its own table
            up = None
            outer = f"{host_uplink.HOST_VETH}{os.getpid()}x{seq}"
            self._host = host_uplink.acquire(self.uplink)
            self._slot, self.gateway, self.address = self._host.allocate()
            self._veth = outer
        peer = ["netns", up] if up else []
        self._outer = (outer, up)
        _run("ip", "link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer,
             *peer)
        on_up = ["-n", up] if up else []
        _run("ip", "-n", ns, "addr", "add", f"{self.address}/30", "dev", inner)
        _run("ip", *on_up, "addr", "add", f"{self.gateway}/30", "dev", outer)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "set", inner, "up")
        _run("ip", *on_up, "link", "set", outer, "up")
        if self._host is not None:  # the operator's LAN services this rule lists
            self._host.allow_lan(outer, self.rule.lan_cidrs)
        _run("ip", "-n", ns, "route", "add", "default", "via", self.gateway)
        _run("ip", "netns", "exec", ns, "nft", "-f", "-",
             input_text=nft_ruleset(self.rule, self.resolvers, proxied=self.proxy is not None))
        resolver = "127.0.0.53" if self.proxy is not None else "127.0.0.1"  # DNS filter
        self.resolv_conf.write_text(f"nameserver {resolver}\noptions attempts:1 timeout:2\n")
        self.resolv_conf.chmod(0o644)
        self._start_trace()
        self._start_dns()
        if self.proxy is not None:
            self.proxy.sandbox_netns = self.netns_path
            self.proxy.audit = self.proxy.audit or self.audit
            if isinstance(self.uplink, Uplink):
                self.proxy.upstream_netns = str(NETNS_DIR / self.uplink.netns)
            self.proxy.start()

    def _start_trace(self) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, "nft", "monitor", "trace"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )
        self._procs.append(proc)
        t = threading.Thread(target=self._read_trace, args=(proc,), daemon=True,
                             name=f"egress-trace-{self.name}")
        t.start()
        self._threads.append(t)
        time.sleep(0.2)  # let the monitor subscribe before the first packet can be refused

    def _read_trace(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        pending: dict[str, Blocked] = {}  # packet line seen, rule line (the verdict) not yet
        for line in proc.stdout:
            verdict = parse_trace_rule(line)
            if verdict is not None:
                hit = pending.pop(verdict[0], None)
                if hit is not None:
                    hit.rule = verdict[1]
                    self._blocked(hit)
                continue
            hit = parse_trace(line)
            if hit is None or _multicast(hit.daddr):
                continue  # the kernel's own IPv6 neighbour/MLD chatter is not an attempt
            if len(pending) > 1000:  # a packet whose rule line never came: record it bare
                self._blocked(pending.pop(next(iter(pending))))
            pending[hit.trace_id] = hit

    def _blocked(self, hit: Blocked) -> None:
        self.blocked.append(hit)
        self._record("egress_blocked", "denied",
                     {"daddr": hit.daddr, "dport": hit.dport, "protocol": hit.protocol,
                      "rule": hit.rule or "unknown", "netns": self.name})

    def _record(self, kind: str, decision: str, detail: dict[str, Any]) -> None:
        if self.audit is not None:
            with contextlib.suppress(Exception):
                self.audit.record(kind, actor="sandbox", tool=self.subject, decision=decision,
                                  detail=detail)

    def _start_dns(self) -> None:
        """Run dnsmasq in the foreground; its log arrives on a pipe only bastion holds."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *dnsmasq_args(self.rule, self.resolvers)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, errors="replace", start_new_session=True,
        )
        self._procs.append(proc)
        assert proc.stderr is not None
        started: list[str] = []
        for line in proc.stderr:  # until dnsmasq says it runs (or dies with a reason)
            started.append(line.strip())
            if "started, version" in line:
                break
        else:
            proc.wait(timeout=5)
            why = " ".join(started)[-300:] or f"exited with {proc.returncode}"
            raise SandboxError(f"egress setup failed: dnsmasq: {why}", fix=FIX)
        t = threading.Thread(target=self._read_dns, args=(proc,), daemon=True,
                             name=f"egress-dns-{self.name}")
        t.start()
        self._threads.append(t)

    def _read_dns(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            rebound = parse_rebind(line)
            if rebound is not None:  # the answer was private/loopback/link-local: dropped
                self.queries.append((rebound, "answer", False))
                self._record("egress_dns", "denied",
                             {"name": rebound, "rule": "dns-rebind", "netns": self.name})
                continue
            parsed = parse_query(line)
            if parsed is None:
                continue
            name, qtype = parsed
            allowed = self.rule.allows_name(name)
            self.queries.append((name, qtype, allowed))
            self._record("egress_dns", "allowed" if allowed else "denied",
                         {"name": name, "type": qtype,
                          "rule": "allowlisted" if allowed else "not-allowlisted",
                          "netns": self.name})

    def close(self) -> None:
        """Stop the resolver and monitor, kill what is left inside, delete the namespace.

        With bastion's own uplink, the last namespace of the process also removes the host
        side (its nftables table, and ip_forward back to its prior value).
        """
        self._stop.set()
        if self.proxy is not None:
            self.proxy.close()
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if (NETNS_DIR / self.name).exists():
            out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                                 text=True, timeout=10).stdout.split()
            for pid in out:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
        if self._outer is not None:
            # The kernel tears a deleted namespace (and so the veth pair) down later, and only
            # once nothing holds it (a container runtime may still): delete our end now, which
            # removes both ends at once.
            outer, up = self._outer
            self._outer = None
            subprocess.run(["ip", *(["-n", up] if up else []), "link", "del", outer],
                           capture_output=True, timeout=10)
        for t in self._threads:
            t.join(timeout=2)
        shutil.rmtree(self._state, ignore_errors=True)
        host, self._host = self._host, None
        if host is not None:
            if self._veth:
                with contextlib.suppress(SandboxError):
                    host.allow_lan(self._veth, self.rule.lan_cidrs, add=False)
            if self._slot is not None:
                host.free(self._slot)
            host_uplink.release(host)

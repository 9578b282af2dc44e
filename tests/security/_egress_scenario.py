"""Egress attacks, run as root inside the stand-in host namespace of :mod:`_world`.

``python -m tests.security._egress_scenario MODE RESOLVER`` prints one JSON line:

- ``rebind``: a real bubblewrap sandbox in an egress namespace whose rule allows
  ``allowed.test`` on port 8000 tries every rebinding name and the LAN, metadata and CGNAT
  addresses directly; then, with the namespace's own firewall flushed (a sandbox that got
  CAP_NET_ADMIN there), the host's forward chain alone; then a rule that lists the LAN
  service in ``cidrs`` (the operator's opt-in).
- ``forge``: other local users (uid 65534, the uid dnsmasq itself runs as, and uid 1000) try
  to append forged ``query[A]`` lines wherever bastion might read dnsmasq's log from, and the
  sandbox sends a DNS query whose name carries a newline and a forged log line.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bastion.config.model import EgressConfig
from bastion.security.egress import uplink
from bastion.security.egress.netns import EgressNetwork
from bastion.security.egress.rules import EgressRule
from bastion.security.egress.setup import egress_sandbox
from bastion.security.egress.uplink import HostUplinkSpec
from bastion.security.sandbox.base import Limits, SandboxSpec

LAN, METADATA, CGNAT, PUBLIC = "192.168.77.10", "169.254.169.254", "100.64.0.10", "93.184.215.14"

PROBE = r"""
import json, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    key = f"{host}:{port}"
    try:
        if host == "meta6.allowed.test":
            out[key] = socket.getaddrinfo(host, port, socket.AF_INET6)[0][4][0]
            continue
        s = socket.create_connection((host, port), timeout=2)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        out[key] = s.recv(64).split(b" ")[1].decode()
    except Exception as e:
        out[key] = type(e).__name__
print(json.dumps(out))
"""


class Events:
    """A recorder like ``AuditLog.record``: keeps (kind, decision, detail)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record(self, kind: str, *, actor: str | None = None, tool: str | None = None,
               decision: str | None = None, detail: Any = None) -> int:
        self.events.append({"kind": kind, "tool": tool, "decision": decision, "detail": detail})
        return len(self.events)


def _network(domains: list[str], cidrs: list[str], resolver: str, audit: Events) -> EgressNetwork:
    rule = EgressRule.create(domains, cidrs, [8000], name="shell")
    return EgressNetwork(rule, HostUplinkSpec(dns=(resolver,)), audit=audit,
                         subject="shell").start()


async def _probe(net: EgressNetwork, workspace: Path, targets: list[tuple[str, int]],
                 cidrs: list[str]) -> dict[str, str]:
    cfg = EgressConfig(domains=["allowed.test"], cidrs=cidrs, ports=[8000])
    box = egress_sandbox("bubblewrap", SandboxSpec(workspace, Limits(wall_seconds=60)), net, cfg)
    res = await box.run(["python3", "-c", PROBE, json.dumps(targets)], timeout_s=60)
    assert res.exit_code == 0, res.stderr
    out: dict[str, str] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


async def rebind(resolver: str) -> dict[str, Any]:
    workspace = Path(tempfile.mkdtemp())
    audit = Events()
    names = ["allowed.test", "lan.allowed.test", "meta.allowed.test", "local.allowed.test",
             "cgnat.allowed.test", "meta6.allowed.test"]
    out: dict[str, Any] = {}
    net = _network(["allowed.test"], [], resolver, audit)
    try:
        out["sandbox"] = await _probe(net, workspace, [(n, 8000) for n in names]
                                      + [(LAN, 8000), (METADATA, 8000), (CGNAT, 8000),
                                         (PUBLIC, 8001)], [])
        subprocess.run(["ip", "netns", "exec", net.name, "nft", "flush", "ruleset"], check=True)
        out["host_layer"] = await _probe(
            net, workspace, [(LAN, 8000), (METADATA, 8000), (CGNAT, 8000), (PUBLIC, 8000)], [])
    finally:
        net.close()
    net = _network(["allowed.test"], [f"{LAN}/32"], resolver, audit)
    try:
        out["lan_listed"] = await _probe(
            net, workspace, [("lan.allowed.test", 8000), ("meta.allowed.test", 8000),
                             (METADATA, 8000), ("allowed.test", 8000)], [f"{LAN}/32"])
    finally:
        net.close()
    time.sleep(0.3)
    out["audit"] = audit.events
    return out


def _dns_query(name: bytes) -> bytes:
    """A raw DNS A query for ``name`` (labels may hold any byte, a newline included)."""
    qname = b"".join(bytes([len(label)]) + label for label in name.split(b".")) + b"\0"
    return struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + b"\0\1\0\1"


def _forger(uid: int, targets: list[str], line: bytes) -> list[str]:
    """As ``uid``, append ``line`` to every target; return the ones that took it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other local user
        os.close(r)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        took = []
        for t in targets:
            try:
                with open(t, "ab") as fh:
                    fh.write(line)
                took.append(t)
            except OSError:
                pass
        os.write(w, json.dumps(took).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    took: list[str] = json.loads(data or b"[]")
    return took


def forge(resolver: str) -> dict[str, Any]:
    audit = Events()
    net = _network(["allowed.test"], [], resolver, audit)
    out: dict[str, Any] = {"took": {}}
    try:
        # the legitimate path works: a real query is audited
        subprocess.run(net.wrap(["/usr/bin/python3", "-c", "import socket; s=socket.socket(2,2); "
                                 f"s.sendto({_dns_query(b'allowed.test')!r}, ('127.0.0.1', 53));"
                                 "s.settimeout(3); s.recv(512)"]), check=True, timeout=10)
        pids = subprocess.run(["ip", "netns", "pids", net.name], capture_output=True,
                              text=True).stdout.split()
        # every file in the namespace's state directory (where dns.log used to be), and the
        # standard streams of every process in the namespace (dnsmasq's log pipe among them)
        targets = sorted(
            {str(p) for p in Path(net.resolv_conf).parent.rglob("*") if p.is_file()}
            | {f"/proc/{pid}/fd/{fd}" for pid in pids for fd in (0, 1, 2)})
        out["targets"] = targets
        for uid in (65534, 1000):
            line = (f"Dec  3 10:00:00 dnsmasq[1]: query[A] forged-{uid}.allowed.test "
                    "from 127.0.0.1\n").encode()
            out["took"][str(uid)] = _forger(uid, targets, line * 3)
        # the sandbox's own attempt: a name whose label carries a newline and a forged line
        evil = b"x\ndnsmasq[1]: query[A] forged-label.allowed.test from 127.0.0.1\n.allowed.test"
        send = ("import socket,sys; s=socket.socket(2,2); s.settimeout(3); "
                "s.sendto(bytes.fromhex(sys.argv[1]), ('127.0.0.1', 53))\n"
                "try: s.recv(512)\nexcept OSError: pass")
        subprocess.run(net.wrap(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups",
                                 "/usr/bin/python3", "-c", send, _dns_query(evil).hex()]),
                       check=True, timeout=10)
        time.sleep(1.0)  # the log reader is a thread
    finally:
        net.close()
    out["audit"] = audit.events
    return out


def main() -> None:
    mode, resolver = sys.argv[1], sys.argv[2]
    # this namespace's own bookkeeping: never mix its ip_forward record with the real host's
    uplink.STATE_DIR = Path(tempfile.mkdtemp(prefix="bastion-egress-state-"))
    socket.setdefaulttimeout(10)
    result = asyncio.run(rebind(resolver)) if mode == "rebind" else forge(resolver)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

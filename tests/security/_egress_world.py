"""A private internet for egress breach tests: a stand-in host namespace and a world behind it.

Like the ``upstream`` fixture of tests/integration/sandbox/test_egress.py, but one level
deeper, so that the sandbox's "public" server can have a public address without touching
the real host's routes: bastion's egress code runs (in a subprocess, :mod:`_egress_scenario`)
inside a host namespace made here, whose default route leads into a world namespace made
here. Nothing leaves these namespaces.

    host ns "bsth-TAG" (bastion's uplink: veths, nft table, ip_forward -- all inside it)
      w0 10.200.0.1/24, default via 10.200.0.2
        |
    world ns "bstw-TAG": w1 10.200.0.2/24 and, as /32s, PUBLIC 93.184.215.14,
      LAN 192.168.77.10, METADATA 169.254.169.254, CGNAT 100.64.0.10, RESOLVER 10.200.0.53;
      dnsmasq on RESOLVER (allowed.test -> PUBLIC; lan/meta/local/cgnat/meta6.allowed.test ->
      the private, link-local, loopback, CGNAT and fd00:ec2::254 addresses: the rebinding
      records an attacker controls under an allowlisted wildcard), an HTTP server on :8000
      of every address.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PUBLIC, LAN, METADATA, CGNAT = "93.184.215.14", "192.168.77.10", "169.254.169.254", "100.64.0.10"
RESOLVER = "10.200.0.53"
RECORDS = {"allowed.test": PUBLIC, "lan.allowed.test": LAN, "meta.allowed.test": METADATA,
           "local.allowed.test": "127.0.0.1", "cgnat.allowed.test": CGNAT,
           "meta6.allowed.test": "fd00:ec2::254"}


@dataclass(frozen=True)
class World:
    """The two namespaces; :meth:`run` runs a scenario inside the host namespace."""

    host: str
    world: str

    def run(self, mode: str, timeout: float = 120) -> dict[str, Any]:
        """Run ``_egress_scenario MODE`` as root in the host namespace; return its JSON."""
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
        proc = subprocess.run(
            ["ip", "netns", "exec", self.host, sys.executable, "-m",
             "tests.security._egress_scenario", mode, RESOLVER],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def make_world() -> Iterator[World]:
    """Create the namespaces and servers; remove everything afterwards."""
    tag = uuid.uuid4().hex[:6]
    host, world = f"bsth-{tag}", f"bstw-{tag}"
    procs: list[subprocess.Popen[bytes]] = []
    _ip("netns", "add", host)
    _ip("netns", "add", world)
    try:
        _ip("-n", host, "link", "set", "lo", "up")
        _ip("-n", world, "link", "set", "lo", "up")
        _ip("-n", host, "link", "add", "w0", "type", "veth", "peer", "name", "w1", "netns", world)
        _ip("-n", host, "addr", "add", "10.200.0.1/24", "dev", "w0")
        _ip("-n", world, "addr", "add", "10.200.0.2/24", "dev", "w1")
        for addr in (PUBLIC, LAN, METADATA, CGNAT, RESOLVER):
            _ip("-n", world, "addr", "add", f"{addr}/32", "dev", "w1")
        _ip("-n", host, "link", "set", "w0", "up")
        _ip("-n", world, "link", "set", "w1", "up")
        _ip("-n", host, "route", "add", "default", "via", "10.200.0.2")
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", world, "dnsmasq", "--keep-in-foreground", "--no-resolv",
             "--no-hosts", f"--listen-address={RESOLVER}", "--bind-interfaces",
             "--pid-file=", *[f"--address=/{name}/{addr}" for name, addr in RECORDS.items()]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", world, sys.executable, "-m", "http.server", "8000",
             "--bind", "0.0.0.0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # the servers bind
        yield World(host, world)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        for ns in (host, world):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def scenario(mode: str) -> dict[str, Any]:
    """Make a world, run one ``_egress_scenario`` mode in it, tear it down; return its JSON."""
    with make_world() as world:
        return world.run(mode)

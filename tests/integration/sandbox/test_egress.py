"""Per-sandbox egress against real namespaces, nftables and dnsmasq (all created here).

No operator uplink: bastion sets up its own (a veth from each egress namespace to the host,
masquerade and forwarding in its own nftables table). An "upstream" namespace made here plays
the outside world behind the host: a veth to the host on 10.213.250.0/24 (inside the first
/16 bastion would pick, so its collision check must step aside), a DNS server that knows
allowed.test and other.test, and HTTP servers on allowed.test:8000, allowed.test:8001 and
other.test:8000. The shell tool may reach allowed.test:8000 only. These addresses are private,
and private destinations are refused unless listed (F14), so the rule lists allowed.test's
address in ``cidrs`` the way an operator allows a LAN service; the public-address path is
tested in tests/security/test_f14_egress_rebind.py.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config.model import Config
from bastion.memory.base import EphemeralMemory
from bastion.messages import ToolCall
from bastion.security.egress import uplink
from bastion.security.egress.netns import problem
from bastion.testing import ScriptedModel
from tests._dockerd import needs_backend

pytestmark = pytest.mark.skipif(problem() is not None and not os.environ.get("CI"),
                                reason=str(problem()))

NET = "10.213.250"
HOST_END, UP_END = f"{NET}.1", f"{NET}.2"
ALLOWED, OTHER, RESOLVER = f"{NET}.10", f"{NET}.11", f"{NET}.53"
PROBE = """
import socket
for host, port in [("allowed.test", 8000), ("other.test", 8000), ("OTHER_IP", 8000),
                   ("allowed.test", 8001)]:
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        r = s.recv(64).split(b" ")[1].decode()
    except Exception as e:
        r = type(e).__name__ + ": " + str(e)
    print(host + ":" + str(port) + "|" + r)
""".replace("OTHER_IP", OTHER)  # socket only: the podman image has python3-minimal


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """An outside world of our own: a namespace behind a veth on the host."""
    tag = uuid.uuid4().hex[:6]
    name, host_veth = f"bstu-{tag}", f"tup{tag}"
    _ip("netns", "add", name)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _ip("link", "add", host_veth, "type", "veth", "peer", "name", "up0", "netns", name)
        _ip("addr", "add", f"{HOST_END}/24", "dev", host_veth)
        _ip("link", "set", host_veth, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "addr", "add", f"{UP_END}/24", "dev", "up0")
        for addr in (ALLOWED, OTHER, RESOLVER):
            _ip("-n", name, "addr", "add", f"{addr}/32", "dev", "up0")
        _ip("-n", name, "link", "set", "up0", "up")
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", name, "dnsmasq", "--keep-in-foreground", "--no-resolv",
             "--no-hosts", f"--listen-address={RESOLVER}", "--bind-interfaces",
             f"--address=/allowed.test/{ALLOWED}", f"--address=/other.test/{OTHER}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for addr, port in ((ALLOWED, 8000), (ALLOWED, 8001), (OTHER, 8000)):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", name, sys.executable, "-m", "http.server", str(port),
                 "--bind", addr], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # the servers bind
        yield name
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        subprocess.run(["ip", "link", "del", host_veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def _ours() -> dict[str, list[str]]:
    """This process's egress leftovers on the host: namespaces, veths, nft tables."""
    pid = os.getpid()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {
        "netns": [w for w in netns.split() if w.startswith(f"bst-{pid}-")],
        "veth": [w.split("@")[0] for w in links.split() if w.startswith(f"bh{pid}x")],
        "table": [w for w in tables.split() if w == f"bastion_egress_{pid}"],
    }


BACKENDS = [pytest.param(k, marks=needs_backend(k))
            for k in ("bubblewrap", "podman", "docker", "gvisor")]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_allowlisted_host_only_and_everything_audited(kind: str, upstream: str,
                                                            tmp_path: Path) -> None:
    from bastion.app import build_app

    forward_before = _forward()
    others_before = uplink.forward_state()["owners"]  # other bastion processes with egress
    config = Config.model_validate({
        "agent": {"workspace": str(tmp_path)},
        "security": {
            "sandbox": kind,
            "egress": {"shell": {"domains": ["allowed.test"], "cidrs": [f"{ALLOWED}/32"],
                                 "ports": [8000]}},
            "egress_dns": [RESOLVER],  # no egress_uplink: bastion makes its own
        },
    })
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    try:
        state = _ours()
        assert state["netns"] and state["veth"] and state["table"], state
        routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
        mine = [ipaddress.ip_network(line.split()[0]) for line in routes.splitlines()
                if f" dev bh{os.getpid()}x" in line]
        assert mine and not any(n.overlaps(ipaddress.ip_network(f"{NET}.0/24")) for n in mine)
        assert _forward() == "1"
        res = await app.gateway.execute(ToolCall("shell", {"command": f"python3 -c '{PROBE}'"}))
        assert res.ok, res.text
        seen = dict(ln.split("|", 1) for ln in res.data["stdout"].splitlines() if "|" in ln)
        assert seen.get("allowed.test:8000") == "200", res.data
        assert "gaierror" in seen["other.test:8000"]  # the resolver refuses it
        assert "ConnectionRefused" in seen[f"{OTHER}:8000"]  # rejected at once
        assert "ConnectionRefused" in seen["allowed.test:8001"]
        # a tool without declared egress still has no network at all
        other = await app.gateway.execute(ToolCall("python", {"code": PROBE}))
        assert "200" not in other.text
        time.sleep(0.5)  # the log readers are threads
        dns = [(e.detail["name"], e.decision) for e in app.audit.events(kind="egress_dns")]
        assert ("allowed.test", "allowed") in dns and ("other.test", "denied") in dns
        blocked = {(e.detail["daddr"], e.detail["dport"], e.detail["rule"])
                   for e in app.audit.events(kind="egress_blocked")}
        assert {(OTHER, 8000, "non-public"), (ALLOWED, 8001, "non-public")} <= blocked
        assert all(e.tool == "shell" for e in app.audit.events(kind="egress_blocked"))
    finally:
        await app.aclose()
    assert _ours() == {"netns": [], "veth": [], "table": []}
    if not others_before and not uplink.forward_state()["owners"]:
        # restored (bastion turned it on only if it was off); with another bastion process's
        # egress alive at either end, ip_forward is that process's to restore
        assert _forward() == forward_before


def test_leftovers_of_a_dead_process_are_removed_at_start() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid = dead.pid
    ns, veth, table = f"bst-{pid}-0", f"bh{pid}x0", f"bastion_egress_{pid}"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", "eg0", "netns", ns, "type", "veth", "peer", "name", veth)
        subprocess.run(["nft", "-f", "-"], check=True, text=True,
                       input=uplink.host_ruleset(pid, "10.249.0.0/16", forward_was_off=False))
        assert uplink.stale() == {"netns": [ns], "veth": [veth], "table": [table]}
        removed = uplink.cleanup_stale()
        assert removed["netns"] == [ns] and removed["table"] == [table]
        assert uplink.stale() == {"netns": [], "veth": [], "table": []}
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)

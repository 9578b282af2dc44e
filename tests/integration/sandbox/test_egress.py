"""Per-sandbox egress against real namespaces, nftables and dnsmasq (all created here).

An "upstream" namespace plays the outside world: a DNS server that knows allowed.test and
other.test, and HTTP servers on allowed.test:8000, allowed.test:8001 and other.test:8000.
The shell tool may reach allowed.test:8000 only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config.model import Config
from bastion.llm.messages import ToolCall
from bastion.memory.base import EphemeralMemory
from bastion.security.egress.netns import problem
from bastion.security.sandbox.factory import backend_class
from tests.fakes.model import ScriptedModel

pytestmark = pytest.mark.skipif(problem() is not None, reason=str(problem()))

ALLOWED, OTHER, RESOLVER = "10.214.0.10", "10.214.0.11", "10.214.0.53"
PROBE = """
import json, urllib.request
out = {}
for url in ["http://allowed.test:8000/", "http://other.test:8000/", "http://OTHER_IP:8000/",
            "http://allowed.test:8001/"]:
    try:
        out[url] = urllib.request.urlopen(url, timeout=3).status
    except Exception as e:
        out[url] = type(getattr(e, "reason", e)).__name__ + ": " + str(getattr(e, "reason", e))
print(json.dumps(out))
""".replace("OTHER_IP", OTHER)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    name = "bstu-" + uuid.uuid4().hex[:6]

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", name)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ip("-n", name, "link", "set", "lo", "up")
        for addr in (ALLOWED, OTHER, RESOLVER):
            ip("-n", name, "addr", "add", f"{addr}/32", "dev", "lo")
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
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


BACKENDS = [pytest.param(k, marks=pytest.mark.skipif(backend_class(k).available() is not None,
                                                     reason=f"{k} unavailable"))
            for k in ("bubblewrap", "gvisor")]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_allowlisted_host_only_and_everything_audited(kind: str, upstream: str,
                                                            tmp_path: Path) -> None:
    from bastion.app import build_app

    config = Config.model_validate({
        "agent": {"workspace": str(tmp_path)},
        "security": {
            "sandbox": kind,
            "egress": {"shell": {"domains": ["allowed.test"], "ports": [8000]}},
            "egress_uplink": {"netns": upstream, "resolver": RESOLVER},
        },
    })
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    try:
        res = await app.gateway.execute(ToolCall("shell", {"command": f"python3 -c '{PROBE}'"}))
        assert res.ok, res.text
        seen = json.loads(res.data["stdout"])
        assert seen["http://allowed.test:8000/"] == 200
        assert "gaierror" in seen["http://other.test:8000/"]  # the resolver refuses it
        assert "Connection refused" in seen[f"http://{OTHER}:8000/"]  # rejected at once
        assert "Connection refused" in seen["http://allowed.test:8001/"]
        # a tool without declared egress still has no network at all
        other = await app.gateway.execute(ToolCall("python", {"code": PROBE}))
        assert "200" not in other.text
        time.sleep(0.5)  # the log readers are threads
        dns = [(e.detail["name"], e.decision) for e in app.audit.events(kind="egress_dns")]
        assert ("allowed.test", "allowed") in dns and ("other.test", "denied") in dns
        blocked = {(e.detail["daddr"], e.detail["dport"])
                   for e in app.audit.events(kind="egress_blocked")}
        assert {(OTHER, 8000), (ALLOWED, 8001)} <= blocked
        assert all(e.tool == "shell" for e in app.audit.events(kind="egress_blocked"))
    finally:
        await app.aclose()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "bst-" not in names.replace(upstream, "")  # the sandbox namespace is gone

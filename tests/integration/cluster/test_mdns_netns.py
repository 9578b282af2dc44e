"""mDNS across two network namespaces joined by a bridge: `bastion node serve` announces in
one, a router in the other discovers it, routes a real request to it, and removes it after
the node vanished (SIGKILL: no goodbye, so only its TTL can tell)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._procs import ROOT

pytestmark = [pytest.mark.real_model, pytest.mark.slow, pytest.mark.needs_root]

if os.geteuid() != 0 or shutil.which("ip") is None:
    pytestmark.append(pytest.mark.skip(reason="needs root and iproute2 to create namespaces"))


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str]]:
    tag = f"{os.getpid() % 100000}"
    a, b, br = f"bstA{tag}", f"bstB{tag}", f"bstR{tag}"
    subnet = f"10.231.{os.getpid() % 200 + 20}"
    made: list[str] = []
    try:
        for ns in (a, b, br):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", br, "link", "add", "br0", "type", "bridge")
        ip("-n", br, "link", "set", "br0", "up")
        for ns, host, end in ((a, "1", "a"), (b, "2", "b")):
            inner, outer = f"bv{end}{tag}", f"bp{end}{tag}"
            ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            ip("link", "set", inner, "netns", ns)
            ip("link", "set", outer, "netns", br)
            ip("-n", br, "link", "set", outer, "master", "br0")
            ip("-n", br, "link", "set", outer, "up")
            ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", inner)
            ip("-n", ns, "link", "set", inner, "up")
        yield a, b, subnet
    finally:
        for ns in made:  # deleting a namespace deletes its veth ends too
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_node_serve_discovered_across_namespaces_then_expires(
    netns: tuple[str, str, str], bastion_home: Path, tmp_path: Path
) -> None:
    ns_a, ns_b, subnet = netns
    log = (tmp_path / "node.log").open("wb")
    env = {**os.environ, "BASTION_HOME": str(bastion_home), "PYTHONPATH": f"{ROOT}/src:{ROOT}"}
    node = subprocess.Popen(
        ["ip", "netns", "exec", ns_a, sys.executable, "-m", "bastion", "node", "serve",
         "--name", "nsnode", "--host", f"{subnet}.1", "--port", "8080", "--n-ctx", "1024",
         "--threads", "1", "--ttl", "4"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    router = subprocess.Popen(
        ["ip", "netns", "exec", ns_b, sys.executable, "-m",
         "tests.integration.cluster._router_probe", "4"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert router.stdout is not None
        found = json.loads(router.stdout.readline() or "{}")
        assert found.get("ok"), (found, router.stderr.read() if router.poll() is not None else "")
        assert found["name"] == "nsnode" and found["source"] == "mdns"
        assert found["url"] == f"http://{subnet}.1:8080"
        assert found["models"] == ["smollm2-135m"] and found["max_context"] == 1024
        served = json.loads(router.stdout.readline() or "{}")
        assert served.get("nodes") == ["nsnode"] and served["text"].strip(), served
        node.send_signal(signal.SIGKILL)  # vanish without a goodbye packet
        node.wait(10)
        removed = json.loads(router.stdout.readline() or "{}")
        assert removed.get("ok"), removed
        assert router.wait(30) == 0
    finally:
        for p in (router, node):
            if p.poll() is None:
                p.kill()
                p.wait(10)
        log.close()

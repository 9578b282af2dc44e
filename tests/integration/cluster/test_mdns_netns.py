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

from ._netns import bridged
from ._procs import ROOT

NODE_KEY = "nsnode-key-0123456789-abcdefghijklmn"
pytestmark = [pytest.mark.real_model, pytest.mark.slow, pytest.mark.needs_root]

if os.geteuid() != 0 or shutil.which("ip") is None:
    pytestmark.append(pytest.mark.skip(reason="needs root and iproute2 to create namespaces"))


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str]]:
    with bridged("bst", 231, [("1",), ("2",)]) as (names, subnet):
        yield names[0], names[1], subnet


def test_node_serve_discovered_across_namespaces_then_expires(
    netns: tuple[str, str, str], bastion_home: Path, tmp_path: Path
) -> None:
    ns_a, ns_b, subnet = netns
    log = (tmp_path / "node.log").open("wb")
    env = {**os.environ, "BASTION_HOME": str(bastion_home), "PYTHONPATH": f"{ROOT}/src:{ROOT}",
           "BASTION_NODE_API_KEY": NODE_KEY}  # a LAN bind needs a key; the router pins nsnode
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

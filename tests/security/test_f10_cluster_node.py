"""F10 attacks on the cluster: a LAN peer (or any local user reading ``ps``) against
``bastion node serve``, and a rogue mDNS announcer against the router's discovery.

- a node bound to a LAN address without a key is refused at start; with a key (from the
  environment) the key is on no process's command line (bastion's or llama.cpp's) and a
  request without it is refused;
- a rogue announcer (plain zeroconf, in a network namespace pair bridged like a LAN) is
  sent no bearer token, and cannot take over the address of a node the router already knows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster._netns import bridged, ip
from tests.integration.cluster._procs import free_port, stop_group

pytest.importorskip("zeroconf")
ROOT = Path(__file__).resolve().parents[2]
KEY = "node-key-7Hq2Lw9Zx4Rv1Tb8Nc5Md3Kp6Jf0Gs"  # 38 characters
TOKEN = "discovery-token-Qm4Xr8Lp2Wz6Vt1Nb9Kc3Hd7"
PIN_TOKEN = "pinned-token-Ys5Fk2Qw8Xe1Rz7Lm4Pn9Bv3Jc"

no_netns = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                              reason="needs root and iproute2 to create network namespaces")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(BASTION_HOME=str(home), PYTHONPATH=f"{ROOT / 'src'}:{ROOT}", HF_HUB_OFFLINE="1",
               **extra)
    return env


def _node(home: Path, ns: str | None, host: str, port: int,
          **env: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bastion", "node", "serve", "--name", "n1", "--host", host,
            "--port", str(port), "--n-ctx", "512", "--threads", "1", "--no-announce"]
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    return subprocess.Popen(argv, env=_env(home, **env), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_serving(proc: subprocess.Popen[str], limit_s: float = 120) -> tuple[bool, str]:
    """Read the node's output until it says it is serving (True) or exits (False)."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return False, seen
        seen += line
        if " serving " in line:
            return True, seen
    return False, seen


@pytest.fixture
def lan_ns() -> Iterator[tuple[str, str]]:
    """One namespace with a LAN-like (non-loopback) address: (namespace, address)."""
    ns = f"bsf10n{os.getpid() % 100000}"
    addr = f"10.232.{os.getpid() % 200 + 20}.1"
    ip("netns", "add", ns)
    try:
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "v0")
        for end in ("v0", "v1"):
            ip("-n", ns, "link", "set", end, "up")
        yield ns, addr
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.needs_root
@no_netns
def test_lan_bind_without_a_key_is_refused(lan_ns: tuple[str, str], bastion_home: Path) -> None:
    ns, addr = lan_ns
    proc = _node(bastion_home, ns, addr, 8080)
    try:
        serving, out = _wait_serving(proc)
    finally:
        stop_group(proc)
    assert not serving, f"an unauthenticated model server was exposed on {addr}:\n{out}"
    assert proc.returncode not in (0, None) and "Traceback" not in out, out
    assert "BASTION_NODE_API_KEY" in out and "fix" in out, out


@pytest.mark.real_model
def test_key_from_env_guards_the_node_and_is_on_no_argv(bastion_home: Path) -> None:
    port = free_port()
    proc = _node(bastion_home, None, "127.0.0.1", port, BASTION_NODE_API_KEY=KEY)
    try:
        serving, out = _wait_serving(proc)
        assert serving, out
        on_argv = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if KEY.encode() in cmdline.read_bytes():
                    on_argv.append(cmdline.parent.name)
            except OSError:
                continue
        import httpx

        base = f"http://127.0.0.1:{port}/v1/models"
        anonymous = httpx.get(base, timeout=30).status_code
        keyed = httpx.get(base, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    finally:
        stop_group(proc)
    assert on_argv == [], f"the key is on the command line of processes {on_argv}"
    assert anonymous == 401, f"a request without the key got {anonymous}"
    assert keyed.status_code == 200, keyed.text


# ---- discovery ---------------------------------------------------------------------------
@pytest.fixture
def lan_pair() -> Iterator[tuple[str, str, str]]:
    """Two namespaces on one bridge: (announcers' ns with .1 and .9, router's ns, prefix)."""
    with bridged("bsf", 233, [("1", "9"), ("2",)]) as (names, subnet):
        yield names[0], names[1], subnet


def _discover(lan: tuple[str, str, str], home: Path, tmp: Path,
              discovery: dict[str, object]) -> tuple[dict[str, str], dict[str, str], list[dict]]:
    """Run announcers and a router; return the router's nodes before and after the rogue
    announced, and every request the two HTTP servers got."""
    ns_a, ns_b, subnet = lan
    log, flag = tmp / "requests.jsonl", tmp / "rogue.go"
    announcers = subprocess.Popen(
        ["ip", "netns", "exec", ns_a, sys.executable, "-m", "tests.security._mdns_announcers",
         f"{subnet}.1", f"{subnet}.9", "8080", str(log), str(flag)],
        env=_env(home), cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    router = subprocess.Popen(
        ["ip", "netns", "exec", ns_b, sys.executable, "-m", "tests.security._discovery_probe",
         json.dumps(discovery)],
        env=_env(home), cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert router.stdout is not None and router.stdin is not None
        line = router.stdout.readline()
        assert line, router.stderr.read() if router.stderr else ""
        before = json.loads(line)["nodes"]
        flag.touch()
        # the rogue announces; mDNS resolves it; health checks run: wait until the router
        # has contacted the rogue's address (at most 30 s), then 2 s more for its state to
        # settle (health_interval_s is 0.3), instead of a fixed 6 s
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and '"rogue"' not in (
                log.read_text() if log.exists() else ""):
            time.sleep(0.1)
        time.sleep(2)
        router.stdin.write("\n")
        router.stdin.flush()
        after = json.loads(router.stdout.readline())["nodes"]
    finally:
        for p in (router, announcers):
            stop_group(p)
    requests = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return before, after, requests


# the configuration the review found (one discovery token, a network allowlist), and one
# that pins gpu1 by name and address with its own token
@pytest.mark.needs_root
@no_netns
@pytest.mark.parametrize("pinned", [False, True], ids=["token-and-networks", "pinned-node"])
def test_rogue_announcer_gets_no_token_and_cannot_move_a_node(
        lan_pair: tuple[str, str, str], bastion_home: Path, tmp_path: Path, pinned: bool) -> None:
    subnet = lan_pair[2]
    discovery: dict[str, object] = {"token": TOKEN, "networks": [f"{subnet}.0/24"]}
    if pinned:
        discovery["trusted"] = [{"name": "gpu1", "address": f"{subnet}.1/32",
                                 "token": PIN_TOKEN}]
    before, after, requests = _discover(lan_pair, bastion_home, tmp_path, discovery)
    sent = {(r["server"], r["auth"]) for r in requests if r["auth"]}
    expected = {("legit", f"Bearer {PIN_TOKEN}")} if pinned else set()
    assert sent == expected, f"bearer tokens sent: {sent}"
    assert before.get("gpu1") == f"http://{subnet}.1:8080", before
    assert after.get("gpu1") == f"http://{subnet}.1:8080", f"gpu1 was moved: {after}"
    assert any(r["server"] == "rogue" for r in requests), "the rogue was never contacted"

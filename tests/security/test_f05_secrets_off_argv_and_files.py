"""F5: an injected secret never reaches a process command line or a file another user can read.

The attack is another local user (``nobody``) looking while a sandboxed call with a secret in
its environment runs, and while a sandboxed stdio MCP server (``Sandbox.command``) is up: it
reads every ``/proc/*/cmdline`` and every file it can open under ``/tmp``, ``/var/tmp``,
``/run``, ``/var/lib/containers`` and bastion's home, and looks for the value.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from tests.security._backends import each_backend, make

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to look as another uid")

# Run by the system python as uid 65534: where can it find the needle? It reads every file it
# can open whose inode changed since the needle was made (argv[1]): a value created then can be in
# no file last written before (writing sets ctime, which no process can set back), and reading
# the whole run's temporary files again for each scan cost minutes in CI.
SCAN = r"""
import os, sys
needle = sys.stdin.read().encode()
since = float(sys.argv[1])
hits = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if needle in fh.read():
                    hits.append(f"/proc/{pid}/cmdline")
        except OSError:
            pass
for root in sys.argv[2:]:
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                if os.stat(path).st_ctime < since:
                    continue
                with open(path, "rb") as fh:
                    if needle in fh.read(4_000_000):
                        hits.append(path)
            except OSError:
                pass
print("\n".join(hits))
"""


def scan_as_nobody(needle: str, home: Path, since: float) -> list[str]:
    """Where uid 65534 finds ``needle`` (in files changed since ``since``, a time.time())."""
    roots = ["/tmp", "/var/tmp", "/run", "/var/lib/containers", str(home)]
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
         "-I", "-c", SCAN, str(since - 2), *roots], input=needle, capture_output=True,
        text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def os_home_of_home(home: Path) -> None:
    """Let ``nobody`` walk into bastion's home, as a lax umask would (the worst case)."""
    for path in (home, *home.parents):
        if path == Path("/"):
            break
        os.chmod(path, os.stat(path).st_mode | 0o005)


@each_backend()
async def test_secret_of_a_running_call_is_nowhere_another_user_can_read(
        kind: str, tmp_path: Path, bastion_home: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    os_home_of_home(bastion_home)
    born = time.time()
    needle = "sk-live-" + secrets.token_hex(12)
    box = make(kind, ws)
    try:
        call = asyncio.ensure_future(box.run(
            ["/bin/sh", "-c", 'test -n "$API_TOKEN" && echo ${#API_TOKEN} && sleep 4'],
            env={"API_TOKEN": needle}))
        await asyncio.sleep(2.5)  # started, still running
        hits = await asyncio.to_thread(scan_as_nobody, needle, bastion_home, born)
        res = await call
    finally:
        box.close()
    assert res.stdout.strip() == str(len(needle)), res.stderr  # the secret did reach the call
    assert hits == [], f"{kind}: another user reads the secret in {hits}"


@each_backend()
async def test_secret_of_a_sandboxed_stdio_server_is_nowhere_another_user_can_read(
        kind: str, tmp_path: Path, bastion_home: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    os_home_of_home(bastion_home)
    born = time.time()
    needle = "ghp_" + secrets.token_hex(16)
    box = make(kind, ws)
    env = {"GITHUB_TOKEN": needle}
    argv = box.command(["/bin/sh", "-c", 'echo ${#GITHUB_TOKEN}; read -r line'], env=env)
    # (before the fix there was no launch_env: the values travelled on the command line)
    launch_env = getattr(box, "launch_env", lambda _: {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    server = subprocess.Popen(argv, env=launch_env(env), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert server.stdout is not None
        first = await asyncio.to_thread(server.stdout.readline)  # the server is up
        hits = await asyncio.to_thread(scan_as_nobody, needle, bastion_home, born)
    finally:
        out, err = server.communicate(b"bye\n", timeout=60)
        box.close()
    assert first.strip() == str(len(needle)).encode(), err.decode()
    assert hits == [], f"{kind}: another user reads the MCP server's secret in {hits}"

"""A model worker killed mid-answer under a live ``bastion serve`` with two conversations.

Fault injection that works on every machine: SIGSEGV from outside, at a moment when both
sessions are streaming, each on its own worker process (``model.workers: 2``). The session
whose worker was killed gets one clear error, the other one completes; the next request on the
first session works, the server never restarts and the audit chain verifies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.server.test_live_server import _bastion, _env, _wait_for_line

pytestmark = [pytest.mark.real_model]
pytest.importorskip("llama_cpp")


def _workers(server_pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == server_pid and b"bastion.llm._worker" in cmd and stat[0] != "Z":
            found.append(int(d.name))
    return found


class Turn(threading.Thread):
    """One streamed session message, collecting its SSE events."""

    def __init__(self, base: str, token: str, session: str, text: str) -> None:
        super().__init__(daemon=True)
        self.args_ = (base, token, session, text)
        self.events: list[tuple[str, dict]] = []
        self.first_text = threading.Event()

    def run(self) -> None:
        base, token, session, text = self.args_
        with httpx.stream("POST", f"{base}/v1/sessions/{session}/messages",
                          headers={"Authorization": f"Bearer {token}"},
                          json={"content": text}, timeout=300) as resp:
            name = ""
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    self.events.append((name, json.loads(line[6:])))
                    if name == "text":
                        self.first_text.set()
        self.first_text.set()

    def names(self) -> list[str]:
        return [n for n, _ in self.events]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    assert _bastion("init", "--yes", home=home).returncode == 0
    token = yaml.safe_load((home / "bastion.yaml").read_text())["api"]["token"]
    env = {**_env(home), "BASTION_MODEL__SLOTS": "2", "BASTION_MODEL__WORKERS": "2",
           "BASTION_MODEL__MAX_TOKENS": "320"}
    out = home / "serve.out"
    with out.open("w") as o, (home / "serve.err").open("w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", "0"],
                                env=env, stdout=o, stderr=e, cwd=home)
    try:
        port = _wait_for_line(out, proc, r"http://127\.0\.0\.1:(\d+)", time.monotonic() + 180)
        yield f"http://127.0.0.1:{port}", token, proc, home
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _started(pid: int) -> tuple[int, int]:
    """Sort key: when the process started (clock ticks since boot), then its pid."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]), pid


def test_worker_segfault_mid_stream_costs_only_that_session(server) -> None:
    base, token, proc, home = server
    story = "Write a very long story about a lighthouse keeper, a storm and the sea."
    alpha = Turn(base, token, "alpha", story)
    alpha.start()
    assert alpha.first_text.wait(240)
    beta = Turn(base, token, "beta", "Describe the sea in three sentences.")
    beta.start()
    assert beta.first_text.wait(240)
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers  # one worker process per conversation
    # alpha leased first, on the least busy worker: the first one started
    os.kill(min(workers, key=_started), signal.SIGSEGV)
    alpha.join(600)
    beta.join(600)
    assert "error" in alpha.names() and "done" not in alpha.names(), alpha.names()[-3:]
    message = dict(alpha.events)["error"]["message"]
    assert "the local model crashed (signal 11, SIGSEGV)" in message and "fix:" in message
    assert "Traceback" not in message
    assert "done" in beta.names() and "error" not in beta.names(), beta.names()[-3:]
    assert proc.poll() is None  # the server lives on

    again = Turn(base, token, "alpha", "Say hello in one short sentence.")
    again.start()
    again.join(600)
    assert "done" in again.names(), again.names()
    assert any(n == "text" for n in again.names())

    verify = _bastion("audit", "verify", home=home)
    assert verify.returncode == 0, verify.stdout + verify.stderr

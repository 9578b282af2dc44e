"""``bastion node serve`` supervises its llama.cpp server: real child, real signals, memory.

A SIGSEGV of the server child is one clear error line and a restart (the node answers chat
completions again); SIGKILLs up to the crash-loop limit end ``node serve`` with exit status 1
and a line with the fix, never a dead or hung parent, and no orphaned server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration._cgroup import confine
from tests.integration.cluster._procs import free_port, stop_group

pytestmark = [pytest.mark.real_model]
pytest.importorskip("llama_cpp.server")
ROOT = Path(__file__).resolve().parents[3]


class Node:
    """A ``bastion node serve`` process whose output is collected line by line."""

    def __init__(self, home: Path, port: int, n_ctx: int = 512) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        env.update(BASTION_HOME=str(home), PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "node", "serve", "--name", "n1", "--port",
             str(port), "--n-ctx", str(n_ctx), "--threads", "1", "--no-announce"],
            env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def out(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, limit_s: float = 120, times: int = 1) -> None:
        deadline = time.monotonic() + limit_s
        while self.out.count(text) < times:
            assert time.monotonic() < deadline, f"no {text!r} (x{times}) in:\n{self.out}"
            assert self.proc.poll() is None, self.out
            time.sleep(0.05)

    def server_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        (pid,) = [int(p) for p in children.split()]
        return pid

    def chat(self) -> str:
        resp = httpx.post(f"http://127.0.0.1:{self.port}/v1/chat/completions", timeout=120,
                          json={"messages": [{"role": "user", "content": "Say hi."}],
                                "max_tokens": 4})
        resp.raise_for_status()
        return str(resp.json()["choices"][0]["message"]["content"])


def test_a_crashed_server_is_restarted_and_a_crash_loop_ends_clearly(
    bastion_home: Path,
) -> None:
    node = Node(bastion_home, free_port())
    try:
        node.wait_for(" serving ")
        first = node.server_pid()
        os.kill(first, signal.SIGSEGV)
        node.wait_for("error: the model server crashed (signal 11, SIGSEGV)", 10)
        node.wait_for("the model server is back at")
        assert node.proc.poll() is None  # the parent lives on
        second = node.server_pid()
        assert second != first
        node.chat()  # the restarted server answers

        # the second crash within the minute, restarted too; SIGILL, what a build for another
        # CPU dies of, names the rebuild
        os.kill(second, signal.SIGILL)
        node.wait_for("error: the model server crashed (signal 4, SIGILL); requests in flight "
                      "were lost (fix: llama.cpp here uses an instruction this CPU lacks")
        node.wait_for("crash 2 of 3")
        node.wait_for("the model server is back at", times=2)
        os.kill(node.server_pid(), signal.SIGKILL)  # the third: no crash loop
        code = node.proc.wait(30)
        time.sleep(0.2)  # the reader thread takes the last lines
        assert code == 1, node.out
        assert "crashed 3 times within 60 s; not restarting it again (fix:" in node.out
        assert "Traceback" not in node.out
        assert not Path(f"/proc/{second}").exists() or \
            Path(f"/proc/{second}/stat").read_text().split()[2] == "Z"
    finally:
        stop_group(node.proc)


def test_a_server_killed_for_memory_is_named_so_and_restarted(bastion_home: Path) -> None:
    """The kernel's out-of-memory killer, for real: the server child is moved into a memory
    cgroup of 1 MiB, and the memory the next request takes gets it killed (SIGKILL)."""
    node = Node(bastion_home, free_port())
    try:
        node.wait_for(" serving ")
        first = node.server_pid()
        with confine(first, 1 << 20):
            with contextlib.suppress(httpx.HTTPError):
                node.chat()
            node.wait_for("error: the model server was killed for lack of memory (signal 9, "
                          "SIGKILL, by the kernel's out-of-memory killer); requests in flight "
                          "were lost (fix: free memory, or a smaller --n-ctx or --model)", 30)
        node.wait_for("the model server is back at")
        assert node.server_pid() != first
        node.chat()  # the restarted server answers
        assert "crashed" not in node.out and "Traceback" not in node.out
    finally:
        stop_group(node.proc)


def test_a_context_above_the_trained_one_is_lowered_before_the_server_starts(
        bastion_home: Path) -> None:
    """--n-ctx 65536 on a model trained on 8192: a note, and the server gets 8192."""
    node = Node(bastion_home, free_port(), n_ctx=65536)
    try:
        node.wait_for(" serving ")
        assert "note: a 65536-token context is above the 8192 tokens this model was trained " \
            "on: using 8192" in node.out
        argv = Path(f"/proc/{node.server_pid()}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--n_ctx") + 1] == b"8192"
        node.chat()
    finally:
        stop_group(node.proc)

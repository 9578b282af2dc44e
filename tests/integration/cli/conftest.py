"""Run the real ``bastion`` command in sub-processes against a scripted OpenAI-compatible server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakes.scripted_chat_server import FakeOpenAIServer

ROOT = Path(__file__).parents[3]


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("BASTION_") and "__" in k)}
    env.update(BASTION_HOME=str(home), PYTHONPATH=str(ROOT / "src"), TERM="xterm",
               COLUMNS="200", NO_COLOR="1", HF_HUB_OFFLINE="1")
    return env


def bastion(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args], env=cli_env(home),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def served_home(bastion_home: Path, fake_server: FakeOpenAIServer) -> Path:
    """A home whose config points ``model.backend: openai`` at the fake server."""
    from bastion.cli._init import build_config
    from bastion.config.loader import dump
    from bastion.hardware import detect, recommend

    hw = detect()
    raw = dump(build_config(hw, recommend(hw)), reveal=True)  # what `bastion init` writes
    path = bastion_home / "bastion.yaml"
    raw["model"].update(backend="openai", base_url=fake_server.base_url, name="fake",
                        native_tools=True)
    raw["memory"] = {"enabled": True, "semantic": False}
    path.write_text(yaml.safe_dump(raw))
    sample = bastion_home / "workspace" / "sample"
    sample.mkdir(parents=True, exist_ok=True)
    for src in (ROOT / "examples" / "sample").iterdir():
        (sample / src.name).write_bytes(src.read_bytes())
    return bastion_home


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path,
                 timeout: float = 180) -> None:
    """Wait until ``bastion serve`` (``proc``) answers /health on ``port``."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "bastion serve did not answer /health in time"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM a server (SIGKILL after 20 s); its log must hold no traceback."""
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    assert "Traceback" not in log.read_text()

"""Fixtures for MCP tests: node assets, a configured BASTION_HOME, a served bastion."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
NODE_ASSETS = (ROOT / ".venv").resolve() / "mcp-node"  # scripts/test-assets.sh installs them
EVERYTHING = NODE_ASSETS / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
CONFORMANCE = NODE_ASSETS / "node_modules/.bin/conformance"
TOKEN = "tok-mcp-test-0123456789-abcdefghijklmnop"


def need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path.name} missing: run scripts/test-assets.sh")


def write_config(home: Path, **sections: object) -> dict[str, object]:
    config: dict[str, object] = {"memory": {"enabled": False}, "api": {"token": TOKEN}}
    config.update(sections)
    (home / "bastion.yaml").write_text(yaml.safe_dump(config))
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Run ``bastion mcp serve --http`` (token auth; its own home) and yield (url, workspace)."""
    home = tmp_path_factory.mktemp("served-home")
    ws = tmp_path_factory.mktemp("served-ws")
    (ws / "hello.txt").write_text("hello from the workspace\n")
    write_config(home, agent={"workspace": str(ws)},
                 security={"tools": {"write_file": "deny"}})
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "mcp", "serve", "--http", "--port", str(port)],
        env=child_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp", ws
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

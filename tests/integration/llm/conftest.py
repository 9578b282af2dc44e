"""One loaded shipped model per test session; a real llama.cpp server process on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.config.model import Config
from bastion.llm.embedded import shipped_model_path
from bastion.llm.worker import WorkerModel
from bastion.tools.base import ToolContext, tool


@pytest.fixture(scope="session")
def shipped_worker() -> Iterator[WorkerModel]:
    """The shipped model in a worker process: a native crash fails one test, not the run."""
    pytest.importorskip("llama_cpp")
    model = WorkerModel.load(n_ctx=4096, slots=1)
    yield model
    model.close()


@pytest.fixture(scope="session")
def q8_copy() -> Path:
    """The shipped model's Q8_0 copy (what the worker loads on CPUs without AMX kernels)."""
    pytest.importorskip("llama_cpp")
    from bastion.llm.source import prepare_source

    return prepare_source(shipped_model_path(), repack=False)[1].path


@pytest.fixture
def embedded(shipped_worker: WorkerModel) -> WorkerModel:
    return shipped_worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """``python -m llama_cpp.server`` serving the shipped model (through
    ``bastion.llm.server_main``: on AMX CPUs llama.cpp's default crashes); yields its URL."""
    pytest.importorskip("llama_cpp.server")
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bastion-llama-server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion.llm.server_main",  # llama_cpp.server, repacking as bastion chooses
                "--model",
                str(shipped_model_path()),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not start in 120 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@tool()
async def count_files(ctx: ToolContext, folder: str) -> str:
    """Count the files in a folder of the workspace.

    Args:
        folder: The folder name, relative to the workspace.
    """
    base = (ctx.workspace / folder).resolve()
    if not base.is_relative_to(ctx.workspace) or not base.is_dir():
        return f"no folder named {folder}"
    names = sorted(p.name for p in base.iterdir() if p.is_file())
    return f"{folder} holds {len(names)} files: {', '.join(names)}"


def sample_config(home: Path, **model: Any) -> Config:
    ws = home / "workspace"
    (ws / "reports").mkdir(parents=True)
    for name in ("q1.txt", "q2.txt", "q3.txt"):
        (ws / "reports" / name).write_text(name)
    return Config.model_validate(
        {"model": model, "agent": {"workspace": str(ws)}, "security": {"sandbox": "none"}}
    )

"""Undo through a live ``python -m bastion serve``: the agent's own tool calls, then the API.

The model is the scripted OpenAI-compatible server (it asks for a ``write_file`` with empty
content and a sandboxed ``shell`` running ``find . -delete``); the calls run through the
served app's gateway in real bubblewrap; ``GET|POST /v1/sessions/{id}/undo`` lists and undoes
them. Any approval the risk classifier asks for is granted over the API by a helper thread.
"""

from __future__ import annotations

import os
import re
import shutil
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

from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.security.test_undo_destruction import _seed, manifest

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "undo-live-test-token-0123456789abcdef"

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


def _approve_all(base: str, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while not stop.is_set():
        try:
            pending = httpx.get(f"{base}/v1/approvals", headers=headers, timeout=5).json()
            for p in pending.get("pending", []):
                httpx.post(f"{base}/v1/approvals/{p['id']}", headers=headers, timeout=5,
                           json={"approve": True})
        except httpx.HTTPError:
            pass
        stop.wait(0.2)


@pytest.fixture
def served(bastion_home: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ws = tmp_path / "workspace"
    ws.mkdir()
    _seed(ws)
    with FakeOpenAIServer() as fake:
        (bastion_home / "bastion.yaml").write_text(yaml.safe_dump({
            "model": {"backend": "openai", "base_url": fake.base_url, "name": "fake",
                      "native_tools": True},
            "api": {"token": TOKEN},
            "agent": {"workspace": str(ws)},
            "memory": {"enabled": True, "semantic": False},
            "security": {"sandbox": "bubblewrap"},
            "intelligence": {"enabled": False},
        }))
        env = {k: v for k, v in os.environ.items() if not (k.startswith("BASTION_") and "__" in k)}
        env.update(BASTION_HOME=str(bastion_home), PYTHONPATH=str(ROOT / "src"),
                   HF_HUB_OFFLINE="1")
        out = bastion_home / "serve.out"
        with out.open("w") as o:
            proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", "0"],
                                    env=env, stdout=o, stderr=subprocess.STDOUT)
        stop = threading.Event()
        try:
            deadline = time.monotonic() + 120
            port = None
            while port is None and time.monotonic() < deadline:
                m = re.search(r"http://127\.0\.0\.1:(\d+)", out.read_text())
                port = m.group(1) if m else None
                assert proc.poll() is None, out.read_text()
                time.sleep(0.1)
            assert port, out.read_text()
            base = f"http://127.0.0.1:{port}"
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            threading.Thread(target=_approve_all, args=(base, stop), daemon=True).start()
            yield base, ws
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        assert "Traceback" not in out.read_text()


def test_agent_destruction_is_listed_and_undone_over_the_api(served: tuple[str, Path]) -> None:
    base, ws = served
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    before = manifest(ws)
    for text in ("empty file: notes.txt", "run shell: find . -delete"):
        r = api.post("/v1/sessions/live-undo/messages", json={"content": text, "stream": False})
        assert r.status_code == 200, r.text
    assert manifest(ws) == {}

    assert httpx.get(f"{base}/v1/sessions/live-undo/undo").status_code == 401  # token needed
    listed = api.get("/v1/sessions/live-undo/undo").json()["calls"]
    assert [(c["tool"], c["counts"]) for c in listed] == [
        ("shell", {"added": 0, "modified": 0, "deleted": len(before)}),
        ("write_file", {"added": 0, "modified": 1, "deleted": 0})]
    assert listed[1]["changes"][0]["path"] == "notes.txt"
    assert listed[1]["changes"][0]["after"]["size"] == 0

    dry = api.post("/v1/sessions/live-undo/undo", json={"n": 2, "dry_run": True}).json()
    assert dry["dry_run"] and manifest(ws) == {}

    done = api.post("/v1/sessions/live-undo/undo", json={"n": 2})
    assert done.status_code == 200, done.text
    assert not done.json()["failed"]
    assert manifest(ws) == before  # content, modes, links and mtimes exact

    again = api.post("/v1/sessions/live-undo/undo", json={})
    assert again.status_code == 404 and "nothing to undo" in again.json()["error"]["message"]
    assert api.get("/health").status_code == 200

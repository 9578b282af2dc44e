"""Undo through a live ``python -m bastion serve``: the agent's own tool calls, then the API.

The model is the scripted OpenAI-compatible server (it asks for a ``write_file`` with empty
content and a sandboxed ``shell`` running ``find . -delete``); the calls run through the
served app's gateway in real bubblewrap; ``GET|POST /v1/sessions/{id}/undo`` lists and undoes
them. Any approval the risk classifier asks for is granted over the API by a helper thread.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.server.test_live_server import approve_all, serving
from tests.security.test_undo_destruction import _seed, manifest

TOKEN = "undo-live-test-token-0123456789abcdef"

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


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
        stop = threading.Event()
        with serving(bastion_home) as base:
            threading.Thread(target=approve_all, args=(base, TOKEN, stop, 0.2), daemon=True).start()
            try:
                yield base, ws
            finally:
                stop.set()


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

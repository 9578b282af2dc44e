"""The API contract, checked by schemathesis against a live ``python -m bastion serve``.

Every operation of the OpenAPI document, all four phases (examples, coverage, fuzzing,
stateful with the document's links), ``--checks all``, with the bearer token. The model is
the scripted OpenAI-compatible fake (a real model would only make it slower); memory is on
with semantic search off, so the search/ingest routes answer their documented 409.
Settings (examples, steps, seed, the two per-operation notes) are in ``schemathesis.toml``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.server.test_live_server import serving

TOKEN = "contract-test-token-0123456789abcdef"
CONFIG = Path(__file__).with_name("schemathesis.toml")
CLI = Path(sys.executable).with_name("schemathesis")

pytestmark = pytest.mark.skipif(not CLI.exists() and shutil.which("schemathesis") is None,
                                reason="schemathesis is not installed (pip install -e .[dev])")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("contract-home")
    ws = home / "workspace"
    ws.mkdir()
    with FakeOpenAIServer() as fake:
        (home / "bastion.yaml").write_text(yaml.safe_dump({
            "model": {"backend": "openai", "base_url": fake.base_url, "name": "fake",
                      "native_tools": True},
            "api": {"token": TOKEN},
            "agent": {"workspace": str(ws)},
            "memory": {"enabled": True, "semantic": False},
            "intelligence": {"enabled": False},
            "voice": {"tts": {"engine": "espeak"}},
        }))
        with serving(home) as base:
            yield base


def test_every_operation_keeps_the_documented_contract(served: str, tmp_path: Path) -> None:
    schema = httpx.get(f"{served}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert schema.status_code == 200
    operations = sum(len(item) for item in schema.json()["paths"].values())
    cli = str(CLI) if CLI.exists() else "schemathesis"
    run = subprocess.run(
        [cli, "--config-file", str(CONFIG), "run", f"{served}/openapi.json",
         "-H", f"Authorization: Bearer {TOKEN}", "--checks", "all",
         "--phases", "examples,coverage,fuzzing,stateful", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache goes there
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-12000:]
    selected = re.search(r"Selected:\s+(\d+)/(\d+)", out)
    tested = re.search(r"Tested:\s+(\d+)", out)
    assert selected and tested, out[-3000:]
    assert int(selected.group(1)) == int(selected.group(2)) == operations  # none left out
    assert int(tested.group(1)) == operations
    assert "Stateful" in out and "API Links:" in out, out[-3000:]

"""Attack: get a secret out through the traces.

With ``telemetry.record_content: true`` spans carry prompts, model replies and tool
arguments/results. A user pastes a GitHub token and the API token into a prompt and has the
agent echo them through ``shell``; every export the live ``bastion serve`` sends to the
(real, test-started) OTLP receiver is searched for them. They must never appear, while the
rest of the content does (so the test proves content really is recorded).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.server.test_tracing_live import TOKEN, Served, _serve, _turn_done

GITHUB_TOKEN = "ghp_" + "Zq8vN3xR7kP2mW5tY9bC4dF6gH1jL0sA2eUq"

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


@pytest.fixture
def recording(bastion_home: Path, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from _serve(bastion_home, tmp_path, monkeypatch, {"record_content": True})


def test_secrets_in_a_prompt_never_reach_exported_spans(recording: Served) -> None:
    prompt = f"run shell: echo marker-words {GITHUB_TOKEN} {TOKEN}"
    with recording.api() as api:
        r = api.post("/v1/sessions/leak/messages", json={"content": prompt, "stream": False})
        assert r.status_code == 200, r.text
    spans = recording.receiver.wait_for(_turn_done)
    raw = b"".join(recording.receiver.raw)
    assert GITHUB_TOKEN.encode() not in raw
    assert GITHUB_TOKEN[4:20].encode() not in raw
    assert TOKEN.encode() not in raw
    # content is recorded, redacted: the prompt, the tool's arguments and its result
    assert b"marker-words" in raw
    attrs = {k: v for s in spans for k, v in s.attributes.items()}
    for key in ("gen_ai.input.messages", "gen_ai.output.messages",
                "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"):
        assert key in attrs, sorted(attrs)
    assert "marker-words" in attrs["gen_ai.tool.call.arguments"]

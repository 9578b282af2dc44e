"""The node tool: JavaScript runs through the gateway in the configured sandbox (gVisor/bwrap)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bastion.app import build_app
from bastion.config.model import Config
from bastion.messages import ToolCall
from bastion.testing import ScriptedModel
from bastion.tools.builtin import builtin_tools

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def test_node_is_offered_only_where_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "node" in {t.name for t in builtin_tools()}
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "node" not in {t.name for t in builtin_tools()}


@pytest.mark.parametrize("backend", ["auto", "bubblewrap"])
async def test_node_runs_sandboxed_through_the_gateway(backend: str, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("3 4 5\n")
    config = Config.model_validate({
        "agent": {"workspace": str(tmp_path)}, "memory": {"enabled": False},
        "security": {"sandbox": backend}})
    app = build_app(config, model=ScriptedModel())
    try:
        code = ("const fs = require('fs');"
                "const n = fs.readFileSync('in.txt', 'utf8').trim().split(' ').map(Number);"
                "console.log('sum', n.reduce((a, b) => a + b, 0));"
                "try { fs.readFileSync('/etc/shadow'); console.log('LEAK'); }"
                " catch (e) { console.log('denied', e.code); }")
        res = await app.gateway.execute(ToolCall("node", {"code": code}))
        assert res.ok, res.for_model()
        assert "sum 12" in res.text and "denied" in res.text and "LEAK" not in res.text
        assert "Warning" not in res.text  # flags are consistent (no V8 warning per run)
        spin = await app.gateway.execute(ToolCall("node", {"code": "while (true) {}",
                                                            "timeout_s": 2}))
        assert "killed" in spin.for_model(), spin.for_model()
    finally:
        await app.aclose()

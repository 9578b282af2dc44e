"""A step of build_app that fails unwinds every part started before it (issue 15 item 4).

Real parts: a bubblewrap warm pool, the reference MCP server over stdio (sandboxed), an egress
namespace with its nftables table and veth, the audit writer thread. Then ``model.path`` names
a file that does not exist: build_app raises the one-line error, and nothing it started is
left running. A spy on the model step records that the parts really were running when it ran.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from bastion.config.model import Config
from bastion.errors import ModelError
from bastion.security.egress.netns import problem
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from tests.integration.mcp.conftest import EVERYTHING, NODE_ASSETS, need
from tests.integration.sandbox.test_egress import _ours

pytestmark = [
    pytest.mark.skipif(BubblewrapSandbox.available() is not None, reason="needs bubblewrap"),
    pytest.mark.skipif(problem() is not None and not os.environ.get("CI"), reason=str(problem())),
]


def _running() -> dict[str, Any]:
    kids = psutil.Process().children(recursive=True)
    return {
        "processes": sorted(p.pid for p in kids if p.is_running()
                            and p.status() != psutil.STATUS_ZOMBIE),
        "audit_writer": any(t.name == "bastion-audit-writer" and t.is_alive()
                            for t in threading.enumerate()),
        **_ours(),
    }


def test_bad_model_path_leaves_nothing_running(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mcp")
    need(EVERYTHING)
    import bastion.models
    from bastion.app import build_app

    config = Config.model_validate({
        "agent": {"workspace": str(tmp_path / "ws")},
        "memory": {"enabled": False},
        "model": {"path": str(tmp_path / "missing.gguf")},
        "security": {"sandbox": "bubblewrap", "warm_pool": 1,
                     "egress": {"shell": {"domains": ["allowed.test"], "ports": [443]}}},
        "mcp_servers": [{"name": "everything", "command": ["node", str(EVERYTHING), "stdio"],
                         "mounts": [str(NODE_ASSETS)]}],
    })
    before = _running()
    during: list[dict[str, Any]] = []
    real = bastion.models.create_model

    def spy(cfg: Config) -> Any:
        during.append(_running())
        return real(cfg)

    monkeypatch.setattr(bastion.models, "create_model", spy)
    with pytest.raises(ModelError, match="model file not found"):
        build_app(config)
    started = during[0]
    assert len(started["processes"]) > len(before["processes"])  # pool waiters, MCP server
    assert started["audit_writer"] and started["netns"] and started["table"], started
    after = _running()
    for _ in range(50):  # a killed child may take a moment to be reaped
        if set(after["processes"]) <= set(before["processes"]):
            break
        threading.Event().wait(0.1)
        after = _running()
    assert after == before

"""F16, as the attack: a dozen or so harmless calls that needed no approval must not earn the trust
that auto-approves MEDIUM calls in a session whose threshold a human lowered to review them.

Through the app's real gateway (intelligence on: threat/anomaly and trust stages from the
default config) with a human who denies what they are asked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.messages import ToolCall
from bastion.tools.base import Risk
from tests.security._gate import Human, app_for

pytest.importorskip("sklearn")


async def test_harmless_calls_do_not_farm_trust(tmp_path: Path) -> None:
    human = Human()
    app, runner = app_for(tmp_path, human, intelligence={"enabled": True},
                          memory={"enabled": False})
    try:
        for i in range(16):  # the farm: below the default threshold, no human involved
            r = await app.gateway.execute(ToolCall("shell", {"command": f"echo {i}"}),
                                          session_id="farm")
            assert r.decision == "allowed", r.text
        assert human.asked == [] and len(runner.calls) == 16
        assert app.hitl is not None
        app.hitl.set_threshold("review", Risk.MEDIUM)  # a human wants to see MEDIUM calls here
        r = await app.gateway.execute(ToolCall("shell", {"command": "echo payload"}),
                                      session_id="review")
        assert r.decision == "denied", r.text  # asked (and refused), not auto-approved by trust
        assert [a.tool for a in human.asked] == ["shell"] and len(runner.calls) == 16
        assert not app.audit.events(kind="approval.decision", actor="trust")
    finally:
        await app.aclose()

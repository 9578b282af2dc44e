"""``POST /v1/privacy/scan``: the PII in a text (offsets, classes, scores) and its route.

The matched values are never echoed (the caller has the text and the offsets); the response
carries the text as the remote model would see it.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import ConfigDict, Field
from starlette.requests import Request

from bastion.server.contract import ApiModel
from bastion.server.deps import BastionApp
from bastion.server.responses import PrivacyScan

router = APIRouter(prefix="/v1/privacy", tags=["privacy"])


class ScanBody(ApiModel):
    """What to scan."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=200_000)


@router.post("/scan", summary="Detect PII and show the privacy router's decision")
async def scan(body: ScanBody, app: BastionApp, request: Request) -> PrivacyScan:
    """Return the entities, the decision (local/remote, classes) and the redacted text."""
    from bastion.privacy.router import PrivacyRouter
    from bastion.privacy.scan import policy_for_config, scan_text

    model = app.model
    policy = getattr(model, "policy", None) if isinstance(model, PrivacyRouter) else None
    if policy is None:  # router off: the configured policy, built once per server
        policy = getattr(request.app.state, "privacy_policy", None)
        if policy is None:
            policy = request.app.state.privacy_policy = policy_for_config(app.config)
    report = await asyncio.to_thread(scan_text, policy, body.text,
                                     enabled=app.config.privacy.enabled)
    return PrivacyScan.model_validate(report.to_dict(values=False))

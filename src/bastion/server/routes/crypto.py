"""Crypto routes: audit proofs, seal status and secret rotation (inside the serving process).

- ``GET /v1/audit/proofs/{event_id}``: a signed Merkle inclusion proof for one record;
- ``GET /v1/audit/count-proof?predicate=denied&first=&last=``: a zero-knowledge count proof;
- ``POST /v1/audit/verify-proof``: verify a proof against the log's trusted keys;
- ``GET /v1/crypto/seal``: whether the key files are sealed;
- ``POST /v1/secrets/rotate``: rotate a secret; ``emergency`` also stops this server's
  running tool calls that use it (their sandboxes are killed) and refuses the old value.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from bastion.config import paths
from bastion.server.contract import errors, feature_off
from bastion.server.deps import BastionApp
from bastion.server.responses import (
    CountProof,
    InclusionProof,
    ProofCheck,
    Rotation,
    Rotations,
    SealStatus,
)
from bastion.server.schemas import RotateBody

router = APIRouter(tags=["crypto"])
PREDICATE = r"^(denied|critical|error|(kind|tool|decision|risk):.+)$"


@router.get("/v1/audit/proofs/{event_id}", summary="Signed inclusion proof for one record",
            responses=errors(404))
async def inclusion_proof(app: BastionApp, event_id: Annotated[int, Path(ge=1, le=2**62)]
                          ) -> InclusionProof:
    """Return a proof that discloses record ``event_id`` and nothing about the others."""
    from bastion.security.audit_proofs import prove_event

    app.audit.flush()
    return InclusionProof.model_validate(
        await asyncio.to_thread(prove_event, app.audit.path, event_id, app.audit.signer))


RecordId = Annotated[int | None, Query(ge=1, le=2**62, description="audit record id (inclusive)")]


@router.get("/v1/audit/count-proof", summary="Zero-knowledge count of matching records",
            responses=errors(400, 404))
async def count_proof(
    app: BastionApp,
    predicate: Annotated[str, Query(pattern=PREDICATE, description="denied, critical, error, "
                                    "kind:KIND, tool:TOOL, decision:DECISION or risk:RISK")]
    = "denied",
    first: RecordId = None, last: RecordId = None,
) -> CountProof:
    """Return a proof of how many records in the window match, hiding which ones.

    404 when no record of the log is in ``[first, last]``; 400 when more than
    ``crypto.proof_max_records`` are.
    """
    from bastion.security.audit_proofs import prove_count

    app.audit.flush()
    return CountProof.model_validate(await asyncio.to_thread(
        prove_count, app.audit.path, predicate, app.audit.signer, first=first, last=last,
        max_records=app.config.crypto.proof_max_records))


@router.post("/v1/audit/verify-proof", summary="Verify an audit proof")
async def verify_proof(app: BastionApp, bundle: dict[str, Any]) -> ProofCheck:
    """Check a proof against this log's trusted keys."""
    from bastion.security.audit import trusted_keys
    from bastion.security.audit_proofs import verify_bundle

    trusted = trusted_keys(app.audit.path, app.audit.pinned,
                           [str(bundle.get("public_key", ""))])
    ok, reason = await asyncio.to_thread(verify_bundle, bundle, trusted)
    return ProofCheck(ok=ok, reason=reason)


@router.get("/v1/crypto/seal", summary="Whether key files are sealed")
async def seal_status(app: BastionApp) -> SealStatus:
    """Return the sealed set's threshold and each file's state."""
    from bastion.crypto.sealed import status

    return SealStatus.model_validate(status(paths.home() / "sealed.json"))


@router.post("/v1/secrets/rotate", summary="Rotate a secret (zero-downtime or emergency)",
             responses=errors(400, 404, 409))
async def rotate(app: BastionApp, body: RotateBody) -> Rotation:
    """Rotate; never returns the values."""
    from bastion.security.secrets.rotation import Rotator

    if app.secrets is None or body.backend not in app.secrets.backends:
        raise feature_off(f"the {body.backend} secret backend", f"secrets.{body.backend}",
                          code="no_secrets")
    rot = Rotator(app.secrets.backends, paths.home() / "secrets" / "rotation.json",
                  audit=app.audit, resolver=app.secrets)
    result = await asyncio.to_thread(
        rot.rotate, body.backend, body.path, key=body.key, value=body.value,
        grace_s=body.grace_s, emergency=body.emergency, actor="api")
    return Rotation.model_validate(result.to_dict())


@router.get("/v1/secrets/rotations", summary="Old versions waiting for destruction")
async def rotations(app: BastionApp, sweep: bool = Query(default=True)) -> Rotations:
    """Destroy the versions whose grace period is over (unless ``sweep=false``); list the rest."""
    from dataclasses import asdict

    from bastion.security.secrets.rotation import Rotator

    if app.secrets is None:
        return Rotations(destroyed=[], pending=[])
    rot = Rotator(app.secrets.backends, paths.home() / "secrets" / "rotation.json",
                  audit=app.audit, resolver=app.secrets)
    done = await asyncio.to_thread(rot.sweep) if sweep else []
    return Rotations.model_validate(
        {"destroyed": [asdict(r) for r in done], "pending": [asdict(r) for r in rot.pending()]})

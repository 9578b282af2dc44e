"""Inclusion and zero-knowledge count proofs over a real audit log; forged proofs fail."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bastion.crypto import pedersen
from bastion.crypto.keys import FileSigner
from bastion.errors import NotFoundError
from bastion.security.audit import AuditLog
from bastion.security.audit_proofs import prove_count, prove_event, verify_bundle


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, FileSigner, list[str]]:
    db = tmp_path / "audit.db"
    audit = AuditLog(db, checkpoint_every=4)
    for i in range(13):
        audit.record("tool_call", tool="shell" if i % 2 else "web_fetch",
                     decision="denied" if i % 4 == 1 else "allowed",
                     risk="critical" if i == 7 else "low", arguments={"n": i})
    audit.close()
    signer = FileSigner(tmp_path / "audit-signing.key")
    return db, signer, (tmp_path / "audit-signing.pub").read_text().split()


def test_inclusion_proof_discloses_one_record(log: tuple[Path, FileSigner, list[str]]) -> None:
    db, signer, trusted = log
    for rid in (1, 6, 13):
        bundle = prove_event(db, rid, signer)
        ok, why = verify_bundle(json.loads(json.dumps(bundle)), trusted)
        assert ok, why
    text = json.dumps(bundle)
    assert '\\"n\\": 12' in text and '\\"n\\": 11' not in text  # only record 13's content is in it
    with pytest.raises(NotFoundError):
        prove_event(db, 99, signer)

    def broken(change: Any) -> str:
        b = copy.deepcopy(bundle)
        change(b)
        ok, why = verify_bundle(b, trusted)
        assert not ok
        return why

    assert "not in the signed tree" in broken(lambda b: b["record"].update(decision="denied"))
    assert "not in the signed tree" in broken(lambda b: b["path"].__setitem__(0, "00" * 32))
    assert "signature" in broken(lambda b: b.update(root="11" * 32))
    assert "position" in broken(lambda b: b.update(index=3))
    other = FileSigner(db.with_name("other.key"))
    forged = prove_event(db, 13, other)  # a valid proof, but signed by an untrusted key
    ok, why = verify_bundle(forged, trusted)
    assert not ok and "not a trusted audit key" in why
    assert verify_bundle(forged, None)[0]  # the math itself is fine


def test_zero_knowledge_count(log: tuple[Path, FileSigner, list[str]]) -> None:
    db, signer, trusted = log
    bundle = prove_count(db, "denied", signer)
    ok, why = verify_bundle(bundle, trusted)
    assert ok and "3 of 13 records 1..13 match 'denied'" in why, why
    ok, why = verify_bundle(prove_count(db, "risk:critical", signer, first=5, last=9), trusted)
    assert ok and "1 of 5 records 5..9" in why, why
    assert '"decision"' not in json.dumps(bundle)  # no record content in a count proof

    lie = copy.deepcopy(bundle)
    lie["proof"]["count"] = 4
    assert not verify_bundle(lie, trusted)[0]

    # A prover who commits to 2 for one record (to shift the sum) cannot make a bit proof.
    proof = pedersen.CountProof.from_dict(bundle["proof"])
    r = 12345
    c2 = pedersen.commit(1, r) + pedersen.generators()[0]  # 2·G + r·H
    proof.commitments[0] = pedersen.encode(c2)
    proof.bit_proofs[0] = pedersen.prove_bit(1, r, c2, f"{proof.context}|0".encode())
    good, why = pedersen.verify_count(proof)
    assert not good and "bit proof 0" in why
    # Re-signing a doctored statement needs the signing key.
    doctored = copy.deepcopy(bundle)
    doctored["proof"]["commitments"][1], doctored["proof"]["commitments"][2] = (
        doctored["proof"]["commitments"][2], doctored["proof"]["commitments"][1])
    ok, why = verify_bundle(doctored, trusted)
    assert not ok and "signature" in why


def test_inclusion_after_retention_prune(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    audit = AuditLog(db, checkpoint_every=3)
    for i in range(9):
        audit.record("tool_call", tool="shell", decision="allowed", arguments={"n": i})
    assert audit.prune(keep_last=4) > 0  # records 1..5 go, behind a signed anchor
    audit.close()
    signer = FileSigner(tmp_path / "audit-signing.key")
    trusted = (tmp_path / "audit-signing.pub").read_text().split()
    for rid in (6, 10):  # the first kept record (its predecessor is the anchor) and the last
        ok, why = verify_bundle(prove_event(db, rid, signer), trusted)
        assert ok, why
    with pytest.raises(NotFoundError):
        prove_event(db, 2, signer)

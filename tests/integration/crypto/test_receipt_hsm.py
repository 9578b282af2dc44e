"""A run receipt signed inside a real SoftHSM2 token (``audit.signer: pkcs11``) verifies offline."""

from __future__ import annotations

from pathlib import Path

from bastion.crypto.pkcs11 import Pkcs11Signer
from bastion.security.audit import AuditLog
from bastion.tasks.receipt import (
    CALL_KINDS,
    call_entry,
    run_events,
    sha256_text,
    sign,
    verify_receipt,
)
from tests.integration.crypto.conftest import SoftHsm


def test_receipt_signed_by_the_hsm_key_verifies_and_a_tampered_one_fails(
        softhsm: SoftHsm, tmp_path: Path) -> None:
    hsm = Pkcs11Signer(softhsm.module, "keys", softhsm.pin, "receipt-key", key_type="ec-p256")
    db = tmp_path / "audit.db"
    log = AuditLog(db, signer=hsm, trust_signer=True)
    first = log.wait(log.record("run.started", session_id="s1", detail={"run_id": "r1"}))
    log.record("tool_call", session_id="s1", tool="shell", decision="allowed",
               arguments={"command": "echo hi"}, detail={"call_id": "c1", "approved_by": "api"})
    answer = sha256_text("the answer")
    last = log.wait(log.record("run.finished", session_id="s1", decision="done",
                               detail={"run_id": "r1", "answer_sha256": answer}))
    log.close()
    calls = [call_entry(e) for e in run_events(db, "s1", first, last) if e.kind in CALL_KINDS]
    body = {"version": 1, "run_id": "r1", "task": "t", "session_id": "s1",
            "audit": {"first": first, "last": last}, "answer_sha256": answer,
            "tool_calls": calls}
    receipt = sign(body, hsm)
    assert receipt["signature"]["algorithm"] == "ecdsa-p256"
    assert verify_receipt(receipt, db).ok, verify_receipt(receipt, db).line
    assert verify_receipt(dict(receipt, task="other"), db).line == (
        "FAILED: the receipt's signature does not match its contents (it was altered)")
    hsm.close()

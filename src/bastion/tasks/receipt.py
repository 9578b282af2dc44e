"""Signed run receipts: what an unattended run did, signed with the audit signer, checked offline.

A receipt names the task, owner, trigger, start and end, the model (GGUF sha256 or the remote
model id), the policy hash, every tool call with its decision and approver, the audit sequence
range the run wrote and the final answer's sha256. It is signed (Ed25519 file key or the PKCS#11
key, whichever signs the audit log) over its canonical JSON.

:func:`verify_receipt` checks a receipt against an audit database without a running bastion:
the signature, that the key is one the log trusts, the log's own chain, and that the log's
records in the receipt's range say the same as the receipt (the calls, the run's end record and
the answer hash). The first disagreement is the one-line reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.crypto.keys import Signer, verify
from bastion.security.audit import AuditEvent, iter_events, open_reader, trusted_keys
from bastion.security.audit import verify as verify_log

VERSION = 1
CALL_KINDS = ("tool_call", "run.call_interrupted")


def canonical(body: dict[str, Any]) -> bytes:
    """Return the bytes a receipt's signature covers (sorted keys, no spaces, UTF-8)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_text(text: str) -> str:
    """Return the hex sha256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


def call_entry(ev: AuditEvent) -> dict[str, Any]:
    """Return a receipt's entry for one audited call (what verification compares)."""
    detail = ev.detail if isinstance(ev.detail, dict) else {}
    approval = detail.get("approval") if isinstance(detail.get("approval"), dict) else None
    approver = detail.get("approved_by") or (approval or {}).get("by")
    return {"call_id": detail.get("call_id"), "tool": ev.tool, "decision": ev.decision,
            "approver": approver, "audit_id": ev.id,
            "arguments_sha256": hashlib.sha256(
                json.dumps(ev.arguments, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, default=str).encode()).hexdigest()}


def run_events(db_path: Path, session_id: str, first: int, last: int) -> list[AuditEvent]:
    """Return the audit records of a run's session between ``first`` and ``last`` (ids)."""
    db = open_reader(db_path)
    try:
        events = iter_events(db, limit=None, session_id=session_id, newest_first=False)
        return [e for e in events if first <= e.id <= last]
    finally:
        db.close()


def sign(body: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """Return ``body`` with its ``signature`` (algorithm, public key, value)."""
    return {**body, "signature": {"algorithm": signer.algorithm, "public_key": signer.public_hex,
                                  "value": signer.sign(canonical(body))}}


@dataclass(frozen=True, slots=True)
class ReceiptCheck:
    """The outcome of :func:`verify_receipt`: ``ok`` and one line saying why."""

    ok: bool
    line: str


def _bad(why: str) -> ReceiptCheck:
    return ReceiptCheck(False, f"FAILED: {why}")


def verify_receipt(receipt: dict[str, Any], audit_db: Path,
                   fingerprints: tuple[str, ...] | list[str] = ()) -> ReceiptCheck:
    """Check ``receipt`` against the audit database at ``audit_db`` (offline).

    ``fingerprints`` pin the trusted keys (``audit.key_fingerprints``, kept outside the audit
    directory); without them the keys in the log's ``audit-signing.pub`` are trusted.
    """
    sig = receipt.get("signature")
    body = {k: v for k, v in receipt.items() if k != "signature"}
    if not isinstance(sig, dict) or not {"public_key", "value"} <= sig.keys():
        return _bad("the receipt has no signature")
    try:
        good = verify(str(sig["public_key"]), canonical(body), str(sig["value"]))
    except (ValueError, TypeError):
        good = False
    if not good:
        return _bad("the receipt's signature does not match its contents (it was altered)")
    key = str(sig["public_key"])
    if key not in trusted_keys(audit_db, fingerprints, candidates=(key,)):
        return _bad("the receipt is signed by a key the audit log does not trust")
    report = verify_log(audit_db, fingerprints=fingerprints)
    if not report.ok:
        return _bad(f"the audit log does not verify: {report.summary()}")
    try:
        first, last = int(body["audit"]["first"]), int(body["audit"]["last"])
        events = run_events(audit_db, str(body["session_id"]), first, last)
    except (KeyError, TypeError, ValueError) as exc:
        return _bad(f"the receipt lacks {exc}")
    end = next((e for e in events if e.id == last and e.kind == "run.finished"), None)
    detail = end.detail if end is not None and isinstance(end.detail, dict) else None
    if detail is None or detail.get("run_id") != body.get("run_id"):
        return _bad(f"audit record {last} is not this run's end record")
    if detail.get("answer_sha256") != body.get("answer_sha256"):
        return _bad("the answer hash differs from the one the audit log recorded")
    calls = [call_entry(e) for e in events if e.kind in CALL_KINDS]
    if calls != body.get("tool_calls"):
        return _bad("the tool calls differ from the audit log's records of this run")
    return ReceiptCheck(True, f"ok: run {body.get('run_id')} of task {body.get('task')}, "
                              f"{len(calls)} tool calls, audit records {first}..{last}")

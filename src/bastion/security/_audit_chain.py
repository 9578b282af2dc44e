"""Hash chain and signing helpers for the audit log (canonical record bytes, trusted keys).

Signing goes through :class:`bastion.crypto.keys.Signer` (an Ed25519 key file by default,
or a PKCS#11 token); ``Signer`` here is the file-key backend, kept under its old name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bastion.crypto.keys import FileSigner as Signer

__all__ = ["COLUMNS", "GENESIS", "Signer", "checkpoint_message", "record_hash", "trust_key",
           "verify_signature"]

GENESIS = "0" * 64
COLUMNS = ("id", "ts", "kind", "actor", "session_id", "tool", "decision", "risk", "arguments",
           "result", "duration_ms", "detail")


def record_hash(prev: str, row: tuple[Any, ...]) -> str:
    """Return the hash of a record: SHA-256 over the previous hash and the canonical row.

    ``row`` holds the stored column values in :data:`COLUMNS` order (``id`` included, so a
    record moved to another position no longer verifies).
    """
    body = json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(prev.encode() + b"\n" + body.encode()).hexdigest()


def checkpoint_message(seq: int, digest: str, ts: float, kind: str = "checkpoint") -> bytes:
    """Return the bytes a checkpoint, anchor or head signature covers."""
    return f"bastion-audit/{kind}/{seq}/{digest}/{ts:.6f}".encode()


def trust_key(pub_path: Path, public: str, *, add: bool = False) -> bool:
    """Record ``public`` in the trusted-keys file beside the log (one key per line).

    The file is created with the first key. Later keys are added only when ``add`` is set
    (a configured HSM key): a log signed first by a file key and later by an HSM key keeps
    verifying, while a key file silently swapped on disk is not trusted. Returns whether a
    key was added to an existing file.
    """
    lines = pub_path.read_text().split() if pub_path.exists() else []
    if public in lines or (lines and not add):
        return False
    with pub_path.open("a") as fh:
        fh.write(public + "\n")
    return bool(lines)


def verify_signature(public_hex: str, message: bytes, signature_hex: str) -> bool:
    """Return whether ``signature_hex`` is a valid signature (Ed25519 or P-256) of ``message``."""
    from bastion.crypto.keys import verify

    return verify(public_hex, message, signature_hex)

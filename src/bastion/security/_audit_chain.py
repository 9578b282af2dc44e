"""Hash chain and signing helpers for the audit log (canonical record bytes, Ed25519 keys)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from bastion._extras import require

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


class Signer:
    """The audit signing key (Ed25519), created on first use beside the database (mode 0600)."""

    def __init__(self, key_path: Path) -> None:
        ed = require("cryptography.hazmat.primitives.asymmetric.ed25519", extra="secrets",
                     feature="signed audit checkpoints")
        ser = require("cryptography.hazmat.primitives.serialization", extra="secrets",
                      feature="signed audit checkpoints")
        self.path = key_path
        if not key_path.exists():
            key = ed.Ed25519PrivateKey.generate()
            raw = key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
            try:
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first; read theirs
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(raw.hex().encode())
        raw = bytes.fromhex(key_path.read_text().strip())
        self._key = ed.Ed25519PrivateKey.from_private_bytes(raw)
        pub = self._key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        self.public_hex = pub.hex()
        pub_path = key_path.with_suffix(".pub")
        if not pub_path.exists():
            pub_path.write_text(self.public_hex + "\n")

    def sign(self, message: bytes) -> str:
        """Return the hex signature of ``message``."""
        return bytes(self._key.sign(message)).hex()


def verify_signature(public_hex: str, message: bytes, signature_hex: str) -> bool:
    """Return whether ``signature_hex`` is a valid Ed25519 signature of ``message``."""
    ed = require("cryptography.hazmat.primitives.asymmetric.ed25519", extra="secrets",
                 feature="signed audit checkpoints")
    exc_mod = require("cryptography.exceptions", extra="secrets",
                      feature="signed audit checkpoints")
    try:
        key = ed.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
        key.verify(bytes.fromhex(signature_hex), message)
    except (exc_mod.InvalidSignature, ValueError):
        return False
    return True

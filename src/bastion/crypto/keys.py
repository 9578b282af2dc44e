"""Signing keys behind one seam: :class:`Signer` (sign, public key) and :func:`verify`.

Two backends implement the seam:

- :class:`FileSigner`: an Ed25519 key in a file (hex, mode 0600) — what the audit log has
  always used; the file may be *sealed* (see :mod:`bastion.crypto.sealed`);
- :class:`bastion.crypto.pkcs11.Pkcs11Signer`: a non-extractable key generated inside a
  PKCS#11 token (SoftHSM2, a TPM through tpm2-pkcs11, a YubiHSM, a cloud HSM).

Public keys travel as text that names their algorithm, so a verifier needs nothing else:
``<64 hex>`` is a raw Ed25519 key (the historic form, kept for old logs) and
``p256:<hex>`` is an uncompressed SEC1 P-256 point. Ed25519 signatures are 64 raw bytes;
P-256 signatures are ECDSA over SHA-256 as raw ``r || s`` (32 bytes each, the PKCS#11
``CKM_ECDSA`` output), all hex-encoded. Only ``cryptography`` does the arithmetic.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from bastion._extras import require

__all__ = ["FileSigner", "Signer", "algorithm_of", "fingerprint", "verify"]

P256_PREFIX = "p256:"


@runtime_checkable
class Signer(Protocol):
    """Something that signs bytes with a private key it never hands out."""

    public_hex: str  # the public key as text: "<hex>" (Ed25519) or "p256:<hex>"
    algorithm: str  # "ed25519" or "ecdsa-p256"

    def sign(self, message: bytes) -> str:
        """Return the hex signature of ``message``."""
        ...


def algorithm_of(public: str) -> str:
    """Return the algorithm a public-key text names (``ed25519`` or ``ecdsa-p256``)."""
    return "ecdsa-p256" if public.startswith(P256_PREFIX) else "ed25519"


def fingerprint(public: str, length: int = 16) -> str:
    """Return the first ``length`` hex digits of a public key's SHA-256 (pins keep >= 32)."""
    return hashlib.sha256(public.strip().encode()).hexdigest()[:length]


def verify(public: str, message: bytes, signature_hex: str) -> bool:
    """Return whether ``signature_hex`` is a valid signature of ``message`` under ``public``."""
    ed = require("cryptography.hazmat.primitives.asymmetric.ed25519", extra="secrets",
                 feature="signatures")
    ec = require("cryptography.hazmat.primitives.asymmetric.ec", extra="secrets",
                 feature="signatures")
    utils = require("cryptography.hazmat.primitives.asymmetric.utils", extra="secrets",
                    feature="signatures")
    hashes = require("cryptography.hazmat.primitives.hashes", extra="secrets",
                     feature="signatures")
    exc_mod = require("cryptography.exceptions", extra="secrets", feature="signatures")
    try:
        sig = bytes.fromhex(signature_hex)
        if public.startswith(P256_PREFIX):
            if len(sig) != 64:
                return False
            key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), bytes.fromhex(public[len(P256_PREFIX):]))
            der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                             int.from_bytes(sig[32:], "big"))
            key.verify(der, message, ec.ECDSA(hashes.SHA256()))
        else:
            ed.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(sig, message)
    except (exc_mod.InvalidSignature, ValueError):
        return False
    return True


class FileSigner:
    """An Ed25519 key in a file, created on first use (mode 0600).

    When the file is sealed (``KEY.sealed`` exists instead), the key is read from the unsealed
    copy in memory-backed runtime storage, or the signer refuses with a clear error.
    """

    algorithm = "ed25519"

    def __init__(self, key_path: Path) -> None:
        ed = require("cryptography.hazmat.primitives.asymmetric.ed25519", extra="secrets",
                     feature="signed audit checkpoints")
        ser = require("cryptography.hazmat.primitives.serialization", extra="secrets",
                      feature="signed audit checkpoints")
        from bastion.crypto.sealed import is_sealed, read_unsealed

        self.path = Path(key_path)
        if is_sealed(self.path):
            raw = bytes.fromhex(read_unsealed(self.path).decode().strip())
        else:
            if not self.path.exists():
                key = ed.Ed25519PrivateKey.generate()
                fresh = key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw,
                                          ser.NoEncryption())
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    pass  # another process created it first; read theirs
                else:
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(fresh.hex().encode())
            raw = bytes.fromhex(self.path.read_text().strip())
        self._key = ed.Ed25519PrivateKey.from_private_bytes(raw)
        pub = self._key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        self.public_hex = pub.hex()

    def sign(self, message: bytes) -> str:
        """Return the hex Ed25519 signature of ``message``."""
        return bytes(self._key.sign(message)).hex()

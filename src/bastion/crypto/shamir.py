"""Shamir secret sharing (t of n) of a key-encryption key, with share integrity.

Shamir's scheme itself is pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir`` (GF(2^128),
16-byte secrets). bastion shares a random 16-byte *key-encryption key* (KEK) and never the
secret itself: the secret (any size) is encrypted with AES-256-GCM under a key derived from
the KEK with HKDF-SHA256. Composition, not new primitives:

- each share is ``bastion-share-1.<set>.<t>.<n>.<index>.<share b64>.<check>`` where ``check``
  is 8 hex digits of SHA-256 over the rest: a mistyped or truncated share is named at once;
- the share-set *header* stores a hash commitment ``SHA-256(set || index || share)`` for every
  share, and the header is the AES-GCM additional data of everything encrypted under the KEK.
  A share that was altered on purpose (its check recomputed) fails its commitment and is
  named; a header whose commitments were altered fails decryption as a whole.
- Fewer than ``t`` shares reveal nothing about the KEK (Shamir's information-theoretic
  hiding); the commitments are hashes of 128-bit random values and reveal nothing either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from bastion._extras import require
from bastion.errors import CryptoError

__all__ = ["Share", "ShareSet", "combine", "combine_secret", "decrypt", "encrypt",
           "parse_share", "split", "split_secret"]

PREFIX = "bastion-share-1"
BLOB_FORMAT = "bastion-shamir-blob-1"
MAX_SHARES = 255


@dataclass(frozen=True, slots=True)
class Share:
    """One parsed share."""

    set_id: str
    threshold: int
    total: int
    index: int
    value: bytes  # 16 bytes

    def text(self) -> str:
        """Return the share in its printable form (with its check digits)."""
        body = (f"{PREFIX}.{self.set_id}.{self.threshold}.{self.total}.{self.index}."
                f"{base64.urlsafe_b64encode(self.value).decode().rstrip('=')}")
        return f"{body}.{_check(body)}"


@dataclass(slots=True)
class ShareSet:
    """The public header of a share set: parameters and one commitment per share."""

    set_id: str
    threshold: int
    total: int
    commitments: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the header as JSON-ready data."""
        return {"set_id": self.set_id, "threshold": self.threshold, "total": self.total,
                "commitments": {str(k): v for k, v in sorted(self.commitments.items())}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShareSet:
        """Read a header written by :meth:`to_dict`."""
        try:
            return cls(str(data["set_id"]), int(data["threshold"]), int(data["total"]),
                       {int(k): str(v) for k, v in dict(data["commitments"]).items()})
        except (KeyError, TypeError, ValueError):
            # from None: it could quote share or key bytes
            raise CryptoError("malformed share-set header",
                              fix="the sealed file was damaged; restore it from a backup") from None

    def aad(self) -> bytes:
        """Return the canonical bytes bound into every ciphertext under this set's KEK."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()


def _check(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:8]


def _commit(set_id: str, index: int, value: bytes) -> str:
    return hashlib.sha256(f"{PREFIX}/{set_id}/{index}/".encode() + value).hexdigest()


def _shamir() -> Any:
    mod = require("Crypto.Protocol.SecretSharing", extra="crypto", feature="Shamir secret sharing")
    return mod.Shamir


def split(threshold: int, total: int) -> tuple[bytes, ShareSet, list[Share]]:
    """Create a random KEK and split it ``threshold``-of-``total``; return (kek, header, shares)."""
    if not 1 <= threshold <= total <= MAX_SHARES:
        raise CryptoError(f"cannot split {threshold}-of-{total}",
                          fix=f"use 1 <= threshold <= shares <= {MAX_SHARES}")
    if threshold == 1:
        raise CryptoError("a threshold of 1 means every share is the whole key",
                          fix="use a threshold of at least 2")
    kek = os.urandom(16)
    set_id = secrets.token_hex(4)
    parts = _shamir().split(threshold, total, kek)
    shares = [Share(set_id, threshold, total, int(i), bytes(v)) for i, v in parts]
    header = ShareSet(set_id, threshold, total,
                      {s.index: _commit(set_id, s.index, s.value) for s in shares})
    return kek, header, shares


def parse_share(text: str, number: int = 0) -> Share:
    """Parse one printed share; a damaged one is named (``number`` is its position, 1-based)."""
    name = f"share {number}" if number else "the share"
    parts = text.strip().split(".")
    if len(parts) != 7 or parts[0] != PREFIX:
        raise CryptoError(f"{name} is not a bastion share",
                          fix="a share looks like bastion-share-1.<set>.<t>.<n>.<i>.<data>.<check>")
    body = ".".join(parts[:6])
    if not hmac.compare_digest(_check(body), parts[6]):
        raise CryptoError(f"{name} is corrupted (its check digits do not match)",
                          fix="re-type it or use another share")
    try:
        pad = "=" * (-len(parts[5]) % 4)
        value = base64.urlsafe_b64decode(parts[5] + pad)
        share = Share(parts[1], int(parts[2]), int(parts[3]), int(parts[4]), value)
    except ValueError:
        # from None: it could quote share or key bytes
        raise CryptoError(f"{name} is corrupted", fix="re-type it or use another share") from None
    if len(value) != 16 or not 1 <= share.index <= share.total:
        raise CryptoError(f"{name} is corrupted", fix="re-type it or use another share")
    return share


def combine(header: ShareSet, shares: list[Share]) -> bytes:
    """Check every share against its commitment and recover the KEK from ``threshold`` of them."""
    seen: dict[int, Share] = {}
    for n, s in enumerate(shares, 1):
        if s.set_id != header.set_id:
            raise CryptoError(f"share {n} (#{s.index}) belongs to another share set "
                              f"({s.set_id}, expected {header.set_id})",
                              fix="use shares printed by the same `bastion crypto seal`")
        expected = header.commitments.get(s.index)
        if expected is None or not hmac.compare_digest(
                expected, _commit(s.set_id, s.index, s.value)):
            raise CryptoError(f"share {n} (#{s.index}) was altered: it does not match its "
                              "commitment", fix="use another share holder's share")
        seen[s.index] = s
    if len(seen) < header.threshold:
        raise CryptoError(f"{len(seen)} distinct share(s) given, {header.threshold} needed",
                          fix=f"provide {header.threshold - len(seen)} more share(s)")
    picked = sorted(seen.values(), key=lambda s: s.index)[: header.threshold]
    return bytes(_shamir().combine([(s.index, s.value) for s in picked]))


def _aead_key(kek: bytes, purpose: str) -> bytes:
    hkdf = require("cryptography.hazmat.primitives.kdf.hkdf", extra="secrets", feature="sealing")
    hashes = require("cryptography.hazmat.primitives.hashes", extra="secrets", feature="sealing")
    kdf = hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=f"bastion-kek/{purpose}".encode())
    return bytes(kdf.derive(kek))


def encrypt(kek: bytes, header: ShareSet, plaintext: bytes, context: str) -> dict[str, str]:
    """Encrypt ``plaintext`` under the KEK (AES-256-GCM, header + ``context`` as AAD)."""
    aead = require("cryptography.hazmat.primitives.ciphers.aead", extra="secrets",
                   feature="sealing")
    nonce = os.urandom(12)
    ct = aead.AESGCM(_aead_key(kek, "seal")).encrypt(
        nonce, plaintext, header.aad() + b"\n" + context.encode())
    return {"context": context, "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(ct).decode()}


def decrypt(kek: bytes, header: ShareSet, sealed: dict[str, str]) -> bytes:
    """Decrypt what :func:`encrypt` returned; any change to header or data is an error."""
    aead = require("cryptography.hazmat.primitives.ciphers.aead", extra="secrets",
                   feature="sealing")
    try:
        return bytes(aead.AESGCM(_aead_key(kek, "seal")).decrypt(
            base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]),
            header.aad() + b"\n" + sealed["context"].encode()))
    except Exception:
        # from None: it could quote share or key bytes
        raise CryptoError(f"sealed data {sealed.get('context', '?')!r} failed authentication",
                          fix="the sealed file or its header was modified; restore a backup"
                          ) from None


def split_secret(data: bytes, threshold: int, total: int) -> tuple[dict[str, Any], list[str]]:
    """Split arbitrary bytes: return (a blob holding the ciphertext, the printed shares)."""
    kek, header, shares = split(threshold, total)
    blob = {"format": BLOB_FORMAT, "header": header.to_dict(),
            "data": encrypt(kek, header, data, "secret")}
    return blob, [s.text() for s in shares]


def combine_secret(blob: dict[str, Any], shares: list[str]) -> bytes:
    """Recover what :func:`split_secret` split, from the blob and ``threshold`` shares."""
    if blob.get("format") != BLOB_FORMAT:
        raise CryptoError("not a bastion Shamir blob", fix="pass the .shamir.json file from split")
    header = ShareSet.from_dict(blob["header"])
    kek = combine(header, [parse_share(s, n) for n, s in enumerate(shares, 1)])
    return decrypt(kek, header, blob["data"])

"""Pedersen commitments on P-256 and a zero-knowledge proof that committed bits sum to ``k``.

The group is NIST P-256 (prime order, cofactor 1): point arithmetic is pycryptodome's
``EccPoint`` and point encoding/decoding (with on-curve validation) is ``cryptography``'s
SEC1 code. ``G`` is the standard generator; ``H`` is derived by try-and-increment from a
public seed (x = SHA-256(seed || counter), the first x that is on the curve), so nobody
knows ``log_G(H)`` — the binding property rests on that.

- ``C = b·G + r·H`` commits to ``b`` (perfectly hiding, computationally binding).
- :func:`prove_bit` is a Cramer–Damgård–Schoenmakers OR-proof (two Schnorr proofs of
  knowledge of ``log_H``, one simulated) that ``C`` commits to 0 or 1, made non-interactive
  with Fiat–Shamir (SHA-256 over a context string, both commitments and both announcements).
  It is honest-verifier zero-knowledge, so the proof reveals nothing about ``b``.
- :func:`prove_count` / :func:`verify_count` prove that ``n`` commitments each hide a bit and
  that the bits sum to ``k``: the verifier checks every bit proof and that ``ΣC_i = k·G +
  R·H`` for the disclosed ``R = Σr_i``. Which commitments hold a 1 stays hidden.

This proves facts about *committed values*; that each value was computed honestly from its
record is bound (the commitment list is signed with the log's Merkle root) and checkable
record by record, but not proven here.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from bastion._extras import require
from bastion.errors import CryptoError

__all__ = ["ORDER", "CountProof", "commit", "prove_count", "verify_count"]

ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_H_SEED = b"bastion/pedersen/P-256/H/v1"


def _ecc() -> Any:
    return require("Crypto.PublicKey.ECC", extra="crypto", feature="zero-knowledge proofs")


@lru_cache(maxsize=1)
def generators() -> tuple[Any, Any]:
    """Return (G, H)."""
    ecc = _ecc()
    g = ecc.EccKey(curve="P-256", d=1).pointQ
    for ctr in range(1000):
        x = hashlib.sha256(_H_SEED + ctr.to_bytes(4, "big")).digest()
        try:
            h = decode(b"\x02" + x)
        except CryptoError:
            continue
        return g, h
    raise CryptoError("could not derive H")  # pragma: no cover - probability 2^-1000


def encode(p: Any) -> bytes:
    """Encode a point in SEC1 compressed form (the identity as one zero byte)."""
    if p.is_point_at_infinity():
        return b"\x00"
    x, y = int(p.x), int(p.y)
    return bytes([2 + (y & 1)]) + x.to_bytes(32, "big")


def decode(data: bytes) -> Any:
    """Decode and validate a SEC1 point (``cryptography`` checks it is on the curve)."""
    ecc = _ecc()
    if data == b"\x00":
        return ecc.EccKey(curve="P-256", d=1).pointQ.point_at_infinity()
    ec = require("cryptography.hazmat.primitives.asymmetric.ec", extra="secrets",
                 feature="zero-knowledge proofs")
    try:
        nums = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data).public_numbers()
    except ValueError as exc:
        raise CryptoError("invalid curve point in proof", fix="the proof was altered") from exc
    return ecc.EccPoint(nums.x, nums.y, curve="P-256")


def scalar(data: bytes) -> int:
    """Hash bytes to a scalar mod the group order (SHA-512, so the bias is ~2^-256)."""
    return int.from_bytes(hashlib.sha512(data).digest(), "big") % ORDER


def _mul(p: Any, k: int) -> Any:
    k %= ORDER
    return p.point_at_infinity() if k == 0 else p * k


def commit(bit: int, r: int) -> Any:
    """Return ``bit·G + r·H``."""
    g, h = generators()
    c = _mul(h, r)
    return c + g if bit else c


def _challenge(ctx: bytes, c_enc: bytes, a0: Any, a1: Any) -> int:
    return scalar(b"bastion/cds-bit/v1|" + ctx + b"|" + c_enc + encode(a0) + encode(a1))


def prove_bit(bit: int, r: int, c: Any, ctx: bytes, c_enc: bytes | None = None
              ) -> tuple[int, int, int, int]:
    """CDS OR-proof that ``c = bit·G + r·H`` with ``bit`` in {0, 1}: (c0, c1, s0, s1)."""
    g, h = generators()
    c_enc = c_enc if c_enc is not None else encode(c)
    targets = (c, c + (-g))  # log_H(c) if bit=0; log_H(c - G) if bit=1
    fake = 1 - bit
    cf, sf = secrets.randbelow(ORDER), secrets.randbelow(ORDER)
    w = secrets.randbelow(ORDER - 1) + 1
    a = [None, None]
    a[fake] = _mul(h, sf) + (-_mul(targets[fake], cf))
    a[bit] = _mul(h, w)
    e = _challenge(ctx, c_enc, a[0], a[1])
    cr = (e - cf) % ORDER
    sr = (w + cr * r) % ORDER
    if bit == 0:
        return cr, cf, sr, sf
    return cf, cr, sf, sr


def verify_bit(c: Any, proof: tuple[int, int, int, int], ctx: bytes,
               c_enc: bytes | None = None) -> bool:
    """Check a :func:`prove_bit` proof."""
    g, h = generators()
    c_enc = c_enc if c_enc is not None else encode(c)
    c0, c1, s0, s1 = (x % ORDER for x in proof)
    a0 = _mul(h, s0) + (-_mul(c, c0))
    a1 = _mul(h, s1) + (-_mul(c + (-g), c1))
    return (c0 + c1) % ORDER == _challenge(ctx, c_enc, a0, a1)


@dataclass(slots=True)
class CountProof:
    """Commitments, one bit proof each, the claimed count and the sum's blinding."""

    context: str
    commitments: list[bytes]
    bit_proofs: list[tuple[int, int, int, int]]
    count: int
    blinding: int

    def to_dict(self) -> dict[str, Any]:
        """Return the proof as JSON-ready data."""
        return {"scheme": "pedersen-p256+cds-or/fiat-shamir-sha512", "context": self.context,
                "count": self.count, "blinding": f"{self.blinding:064x}",
                "commitments": [c.hex() for c in self.commitments],
                "bit_proofs": [[f"{x:064x}" for x in p] for p in self.bit_proofs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CountProof:
        """Read :meth:`to_dict` output (malformed input is a :class:`CryptoError`)."""
        try:
            proofs = [(int(p[0], 16), int(p[1], 16), int(p[2], 16), int(p[3], 16))
                      for p in d["bit_proofs"]]
            return cls(str(d["context"]), [bytes.fromhex(c) for c in d["commitments"]], proofs,
                       int(d["count"]), int(d["blinding"], 16))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CryptoError("malformed count proof", fix="the proof was altered") from exc

    def digest(self) -> str:
        """Return SHA-256 over the context, count and commitments (what gets signed)."""
        h = hashlib.sha256(f"{self.context}|{self.count}|".encode())
        for c in self.commitments:
            h.update(c)
        return h.hexdigest()


def _item_ctx(context: str, i: int) -> bytes:
    return f"{context}|{i}".encode()


def prove_count(bits: list[int], blindings: list[int], context: str) -> CountProof:
    """Commit to ``bits`` with ``blindings`` and prove each is a bit and they sum to the count."""
    if len(bits) != len(blindings):
        raise CryptoError("one blinding per bit is needed")
    commitments, proofs = [], []
    for i, (b, r) in enumerate(zip(bits, blindings, strict=True)):
        if b not in (0, 1):
            raise CryptoError(f"value {i} is not a bit")
        c = commit(b, r)
        enc = encode(c)
        commitments.append(enc)
        proofs.append(prove_bit(b, r, c, _item_ctx(context, i), enc))
    return CountProof(context, commitments, proofs, sum(bits), sum(blindings) % ORDER)


def verify_count(proof: CountProof) -> tuple[bool, str]:
    """Verify a :class:`CountProof`; return (ok, reason)."""
    g, h = generators()
    if len(proof.commitments) != len(proof.bit_proofs):
        return False, "commitment and bit-proof counts differ"
    if not 0 <= proof.count <= len(proof.commitments):
        return False, "count is out of range"
    total = g.point_at_infinity()
    for i, (raw, bp) in enumerate(zip(proof.commitments, proof.bit_proofs, strict=True)):
        try:
            c = decode(raw)
        except CryptoError:
            return False, f"commitment {i} is not a curve point"
        if encode(c) != raw:  # one canonical encoding per point
            return False, f"commitment {i} is not canonically encoded"
        if not verify_bit(c, bp, _item_ctx(proof.context, i), raw):
            return False, f"bit proof {i} does not verify"
        total = total + c
    if encode(total) != encode(_mul(g, proof.count) + _mul(h, proof.blinding)):
        return False, f"the commitments do not sum to the claimed count {proof.count}"
    return True, ""

"""A Merkle tree (RFC 6962 / Certificate Transparency shape) with inclusion proofs.

Leaves and inner nodes are domain-separated (``SHA-256(0x00 || leaf)`` and
``SHA-256(0x01 || left || right)``), so a leaf can never pass for a node. The tree over ``n``
leaves splits at the largest power of two below ``n``, exactly as RFC 6962 section 2.1, and
:func:`inclusion_proof` / :func:`verify_inclusion` follow its audit-path algorithm.

What an inclusion proof gives: *integrity and membership* — that one leaf is at index ``i``
of the tree whose root was signed — while the sibling hashes it discloses reveal nothing
about other leaves *only if* the leaves are hiding commitments (the audit log salts each leaf
with a secret per-record key for that reason). It is not a zero-knowledge proof.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["MerkleTree", "leaf_hash", "node_hash", "verify_inclusion"]


def leaf_hash(data: bytes) -> bytes:
    """Return the leaf hash ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the inner-node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


class MerkleTree:
    """A tree built once over a list of leaf hashes; levels are kept for fast proofs."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self._cache: dict[tuple[int, int], bytes] = {}

    def __len__(self) -> int:
        return len(self.leaves)

    def _root(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 1:
            return self.leaves[lo]
        key = (lo, hi)
        hit = self._cache.get(key)
        if hit is None:
            k = _split(n)
            hit = node_hash(self._root(lo, lo + k), self._root(lo + k, hi))
            self._cache[key] = hit
        return hit

    def root(self) -> bytes:
        """Return the tree head (``SHA-256(b"")`` for an empty tree, as RFC 6962)."""
        if not self.leaves:
            return hashlib.sha256(b"").digest()
        return self._root(0, len(self.leaves))

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Return the audit path for leaf ``index`` (siblings from the leaf upwards)."""
        if not 0 <= index < len(self.leaves):
            raise IndexError(index)
        path: list[bytes] = []
        lo, hi = 0, len(self.leaves)
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._root(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._root(lo, lo + k))
                lo = lo + k
        path.reverse()
        return path


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """Return whether the RFC 6962 audit ``path`` puts ``leaf`` at ``index`` under ``root``."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)

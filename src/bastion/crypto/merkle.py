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


class MerkleTree:
    """A tree built once, level by level, over a list of leaf hashes.

    Pairing neighbours and carrying an unpaired last node up unchanged gives exactly the
    RFC 6962 tree (whose left subtree is always the largest power of two).
    """

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.levels: list[list[bytes]] = [list(leaves)]
        level = self.levels[0]
        while len(level) > 1:
            nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            self.levels.append(nxt)
            level = nxt

    def __len__(self) -> int:
        return len(self.leaves)

    def root(self) -> bytes:
        """Return the tree head (``SHA-256(b"")`` for an empty tree, as RFC 6962)."""
        if not self.leaves:
            return hashlib.sha256(b"").digest()
        return self.levels[-1][0]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Return the audit path for leaf ``index`` (siblings from the leaf upwards)."""
        if not 0 <= index < len(self.leaves):
            raise IndexError(index)
        path: list[bytes] = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index //= 2
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

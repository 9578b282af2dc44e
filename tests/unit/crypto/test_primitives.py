"""Merkle trees, Shamir shares, P-256 keys and Pedersen proofs against independent checks."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bastion.crypto import merkle, pedersen, shamir
from bastion.crypto.keys import verify
from bastion.errors import CryptoError


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH, written straight from the RFC's recursive definition."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _reference_root(leaves[:k]) + _reference_root(leaves[k:])
                          ).digest()


def test_merkle_matches_rfc6962_and_proofs_verify() -> None:
    for n in (1, 2, 3, 5, 8, 13, 64, 100):
        leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
        tree = merkle.MerkleTree(leaves)
        root = tree.root()
        assert root == _reference_root(leaves)
        for i in range(n):
            path = tree.inclusion_proof(i)
            assert merkle.verify_inclusion(leaves[i], i, n, path, root)
            if n > 1:
                assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, path, root)
                assert not merkle.verify_inclusion(leaves[i], i, n, path, leaves[i])
    assert merkle.MerkleTree([]).root() == hashlib.sha256(b"").digest()


def test_shamir_any_threshold_subset_and_not_fewer() -> None:
    blob, shares = shamir.split_secret(b"x" * 5000, 3, 5)
    for pick in ([0, 1, 2], [4, 2, 0], [1, 3, 4], [0, 1, 2, 3, 4]):
        assert shamir.combine_secret(blob, [shares[i] for i in pick]) == b"x" * 5000
    with pytest.raises(CryptoError, match="2 distinct share"):
        shamir.combine_secret(blob, [shares[0], shares[1], shares[1]])
    with pytest.raises(CryptoError, match="threshold of 1"):
        shamir.split(1, 3)
    tampered = dict(blob, data=dict(blob["data"], context="other"))
    with pytest.raises(CryptoError, match="failed authentication"):
        shamir.combine_secret(tampered, shares[:3])


def test_p256_signatures_interoperate_with_cryptography() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = "p256:" + key.public_key().public_bytes(Encoding.X962,
                                                  PublicFormat.UncompressedPoint).hex()
    r, s = decode_dss_signature(key.sign(b"msg", ec.ECDSA(hashes.SHA256())))
    sig = (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()
    assert verify(pub, b"msg", sig)
    assert not verify(pub, b"msg2", sig)
    assert not verify(pub, b"msg", sig[:-4])


def test_count_proof_hides_which_and_rejects_lies() -> None:
    bits = [secrets.randbelow(2) for _ in range(24)]
    blind = [secrets.randbelow(pedersen.ORDER) for _ in bits]
    proof = pedersen.prove_count(bits, blind, "ctx")
    assert pedersen.verify_count(proof) == (True, "")
    assert proof.count == sum(bits)
    wrong_ctx = pedersen.CountProof.from_dict({**proof.to_dict(), "context": "ctx2"})
    assert not pedersen.verify_count(wrong_ctx)[0]  # proofs are bound to their statement
    with pytest.raises(CryptoError):
        pedersen.prove_count([2], [1], "ctx")
    with pytest.raises(CryptoError, match="invalid curve point"):
        pedersen.decode(b"\x02" + b"\xff" * 32)

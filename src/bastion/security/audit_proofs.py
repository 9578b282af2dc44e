"""Privacy-preserving proofs over the audit log: record inclusion and committed counts.

Two proofs, each signed with the log's signer (key file or HSM) over a statement that binds
the Merkle root to the hash chain's head (so a proof is tied to the same records that
``bastion audit verify`` checks):

- **Inclusion proof** (``bastion audit prove ID``): a Merkle tree (RFC 6962 shape) over every
  stored record, each leaf ``SHA-256(0x00 || salt_i || chain hash_i)`` with a per-record
  salt ``HMAC-SHA256(commit key, id)`` (the chain hash covers the record's canonical row and
  its predecessor's hash). The bundle discloses the one record, its predecessor's chain hash
  (a hash, not content), its salt and the audit path; the sibling hashes are hiding
  commitments to the other records (salted with secret 256-bit salts), so nothing about them
  leaks beyond how many there are. This
  gives integrity and membership; it is *not* a zero-knowledge proof.
- **Count proof** (``bastion audit prove --count PREDICATE``): for the records in a window,
  a Pedersen commitment to the bit "this record matches" per record, a zero-knowledge
  CDS OR-proof per commitment that it hides 0 or 1, and the opening of their sum: the
  verifier learns "k of these n records were denied", not which. Blindings come from the
  commit key, so any single record can later be opened against its commitment.

The commit key lives beside the database (``audit-commit.key``, 0600, sealable).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.crypto import merkle, pedersen
from bastion.crypto.keys import Signer, fingerprint
from bastion.errors import AuditError, NotFoundError
from bastion.security._audit_chain import COLUMNS, GENESIS, record_hash, verify_signature
from bastion.security.audit import open_reader

__all__ = ["PREDICATES", "commit_key_path", "prove_count", "prove_event", "verify_bundle"]

INCLUSION = "bastion-audit-inclusion-1"
COUNT = "bastion-audit-count-1"
PREDICATES = ("denied", "critical", "error", "kind:KIND", "tool:TOOL",
              "decision:DECISION", "risk:RISK")


def commit_key_path(db: Path) -> Path:
    """Return the commit-key path beside the audit database."""
    return db.with_name(db.stem + "-commit.key")


def _commit_key(db: Path) -> bytes:
    from bastion.crypto.sealed import is_sealed, read_unsealed

    path = commit_key_path(db)
    if is_sealed(path):
        return bytes.fromhex(read_unsealed(path).decode().strip())
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex())
    return bytes.fromhex(path.read_text().strip())


def _salt(key: bytes, rid: int) -> bytes:
    return hmac.digest(key, f"bastion-audit/leaf/{rid}".encode(), "sha256")


def _leaf(salt: bytes, chain_hash: str) -> bytes:
    """Leaf = SHA-256(0x00 || salt || the record's chain hash); the chain hash covers the row."""
    return merkle.leaf_hash(salt + bytes.fromhex(chain_hash))


def _statement(first: int, size: int, root: str, chain: str, ts: float, extra: str = "") -> bytes:
    return f"bastion-audit/merkle/{first}/{size}/{root}/{chain}/{ts:.6f}/{extra}".encode()


def _rows(db: Path, lo: int | None = None, hi: int | None = None) -> list[tuple[Any, ...]]:
    conn = open_reader(db)
    try:
        sql, params = "SELECT * FROM events", []
        if lo is not None and hi is not None:
            sql += " WHERE id BETWEEN ? AND ?"
            params = [lo, hi]
        return [tuple(r) for r in conn.execute(sql + " ORDER BY id", params)]
    finally:
        conn.close()


def _tree(db: Path, key: bytes) -> tuple[list[tuple[Any, ...]], merkle.MerkleTree]:
    rows = _rows(db)
    if not rows:
        raise NotFoundError("the audit log is empty", fix="run a tool first")
    return rows, merkle.MerkleTree([_leaf(_salt(key, int(r[0])), str(r[12])) for r in rows])


def _sign(signer: Signer, msg: bytes) -> dict[str, str]:
    return {"signature": signer.sign(msg), "public_key": signer.public_hex,
            "algorithm": signer.algorithm}


def prove_event(db: Path, event_id: int, signer: Signer) -> dict[str, Any]:
    """Return a signed inclusion proof for record ``event_id`` (discloses that record only)."""
    key = _commit_key(db)
    rows, tree = _tree(db, key)
    first = int(rows[0][0])
    index = event_id - first
    if not 0 <= index < len(rows) or int(rows[index][0]) != event_id:
        raise NotFoundError(f"no audit record {event_id}",
                            fix=f"pick an id between {first} and {rows[-1][0]}")
    row = rows[index]
    prev = str(rows[index - 1][12]) if index else _anchor_prev(db, first)
    root, chain, ts = tree.root().hex(), str(rows[-1][12]), time.time()
    return {"format": INCLUSION, "record": dict(zip(COLUMNS, row[:12], strict=True)),
            "prev_hash": prev, "salt": _salt(key, event_id).hex(), "index": index,
            "first_id": first,
            "size": len(rows), "path": [p.hex() for p in tree.inclusion_proof(index)],
            "root": root, "chain_head": chain, "ts": ts,
            **_sign(signer, _statement(first, len(rows), root, chain, ts))}


def _anchor_prev(db: Path, first: int) -> str:
    """Return the chain hash before the first stored record (genesis, or a signed anchor's)."""
    if first == 1:
        return GENESIS
    conn = open_reader(db)
    try:
        row = conn.execute("SELECT prev_hash FROM anchors WHERE first_id = ?", (first,)
                           ).fetchone()
    finally:
        conn.close()
    if row is None:
        raise AuditError("records before the first stored one are missing without an anchor",
                         fix="bastion audit verify")
    return str(row[0])


def _predicate(spec: str) -> Callable[[tuple[Any, ...]], bool]:
    named: dict[str, Callable[[tuple[Any, ...]], bool]] = {
        "denied": lambda r: r[6] == "denied",
        "critical": lambda r: r[7] == "critical",
        "error": lambda r: r[6] == "error",
    }
    if spec in named:
        return named[spec]
    col, _, value = spec.partition(":")
    cols = {"kind": 2, "tool": 5, "decision": 6, "risk": 7}
    if col in cols and value:
        i = cols[col]
        return lambda r: r[i] == value
    raise AuditError(f"unknown predicate {spec!r}", fix=f"use one of {', '.join(PREDICATES)}")


def prove_count(db: Path, predicate: str, signer: Signer, *, first: int | None = None,
                last: int | None = None, max_records: int = 20_000) -> dict[str, Any]:
    """Prove in zero knowledge how many records in ``[first, last]`` match ``predicate``."""
    test = _predicate(predicate)
    key = _commit_key(db)
    rows, tree = _tree(db, key)
    lo = max(int(first if first is not None else rows[0][0]), int(rows[0][0]))
    hi = min(int(last if last is not None else rows[-1][0]), int(rows[-1][0]))
    window = [r for r in rows if lo <= int(r[0]) <= hi]
    if not window:
        span = f"{rows[0][0]}..{rows[-1][0]}"
        raise NotFoundError(f"the log holds records {span}; none is in {first or ''}..{last or ''}",
                         fix=f"pick --first/--last within {span}, or leave them out for the "
                         "whole log")
    if len(window) > max_records:
        raise AuditError(f"{len(window)} records exceed crypto.proof_max_records={max_records}",
                         fix="narrow the window with --first/--last")
    root, chain, ts = tree.root().hex(), str(rows[-1][12]), time.time()
    context = f"{COUNT}|{predicate}|{lo}|{hi}|{root}"
    bits = [int(test(r)) for r in window]
    blind = [pedersen.scalar(hmac.digest(key, f"bastion-audit/pedersen/{predicate}/{r[0]}"
                                         .encode(), "sha256")) for r in window]
    proof = pedersen.prove_count(bits, blind, context)
    first_id = int(rows[0][0])
    msg = _statement(first_id, len(rows), root, chain, ts, proof.digest())
    return {"format": COUNT, "statement": f"{proof.count} of {len(window)} audit records "
            f"{lo}..{hi} match {predicate!r}", "predicate": predicate, "first": lo,
            "last": hi, "first_id": first_id, "size": len(rows), "root": root,
            "chain_head": chain, "ts": ts, "proof": proof.to_dict(), **_sign(signer, msg)}


def _trusted(bundle: dict[str, Any], trusted: list[str] | None) -> tuple[bool, str]:
    key = str(bundle.get("public_key", ""))
    if trusted is None:
        return True, f"signed by key {fingerprint(key)} (not checked against a trusted key)"
    if key not in trusted:
        return False, f"signed by key {fingerprint(key)}, which is not a trusted audit key"
    return True, f"signed by trusted key {fingerprint(key)}"


def verify_bundle(bundle: dict[str, Any], trusted: list[str] | None = None
                  ) -> tuple[bool, str]:
    """Verify an inclusion or count proof; return (ok, one-line reason or summary)."""
    try:
        fmt = bundle["format"]
        first, size = int(bundle["first_id"]), int(bundle["size"])
        root, chain, ts = str(bundle["root"]), str(bundle["chain_head"]), float(bundle["ts"])
        sig, key = str(bundle["signature"]), str(bundle["public_key"])
    except (KeyError, TypeError, ValueError):
        return False, "not a bastion audit proof (fields missing)"
    ok, who = _trusted(bundle, trusted)
    if not ok:
        return False, who
    if fmt == INCLUSION:
        try:
            row = [bundle["record"][c] for c in COLUMNS]
            index = int(bundle["index"])
            digest = record_hash(str(bundle["prev_hash"]), tuple(row))
            leaf = _leaf(bytes.fromhex(bundle["salt"]), digest)
            path = [bytes.fromhex(p) for p in bundle["path"]]
        except (KeyError, TypeError, ValueError):
            return False, "malformed inclusion proof"
        if int(row[0]) != first + index:
            return False, "the record id does not match its position in the tree"
        if not verify_signature(key, _statement(first, size, root, chain, ts), sig):
            return False, "the signature over the Merkle root is invalid"
        if not merkle.verify_inclusion(leaf, index, size, path, bytes.fromhex(root)):
            return False, "the record is not in the signed tree (record or path altered)"
        return True, (f"record {row[0]} is record {index + 1} of {size} in the signed log; "
                      f"{who}")
    if fmt == COUNT:
        proof = pedersen.CountProof.from_dict(bundle["proof"])
        lo, hi, pred = int(bundle["first"]), int(bundle["last"]), str(bundle["predicate"])
        if proof.context != f"{COUNT}|{pred}|{lo}|{hi}|{root}":
            return False, "the proof's context does not match its statement"
        if len(proof.commitments) != hi - lo + 1 or not first <= lo <= hi < first + size:
            return False, "the commitments do not cover exactly the records of the window"
        msg = _statement(first, size, root, chain, ts, proof.digest())
        if not verify_signature(key, msg, sig):
            return False, "the signature over the statement is invalid"
        good, why = pedersen.verify_count(proof)
        if not good:
            return False, why
        return True, (f"{proof.count} of {len(proof.commitments)} records {lo}..{hi} match "
                      f"{pred!r} (zero-knowledge: which ones stays hidden); {who}")
    return False, f"unknown proof format {fmt!r}"

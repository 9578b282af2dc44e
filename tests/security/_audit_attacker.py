"""What someone who can write the audit directory, but holds no trusted key, can do to the log.

Shared by the F3 breach tests. Each helper edits the real SQLite file (and the head, wherever
the writer keeps it: the ``head`` table, or the old ``audit.db.head`` file) the way an attacker
with a shell would.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from bastion.security._audit_chain import checkpoint_message, record_hash


def tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def rechain(db: Path, start: int, sql: str | None = None) -> None:
    """Run ``sql`` (an edit), then recompute every hash from record ``start`` on."""
    conn = sqlite3.connect(db)
    if sql:
        conn.execute(sql)
    row = conn.execute("SELECT hash FROM events WHERE id=?", (start - 1,)).fetchone()
    prev = row[0] if row else "0" * 64
    for r in conn.execute("SELECT * FROM events WHERE id>=? ORDER BY id", (start,)).fetchall():
        prev = record_hash(prev, tuple(r[:12]))
        conn.execute("UPDATE events SET hash=? WHERE id=?", (prev, r[0]))
    conn.commit()
    conn.close()


def delete_head(db: Path) -> None:
    """Remove the signed head, wherever it is kept."""
    db.with_name(db.name + ".head").unlink(missing_ok=True)
    if "head" in tables(db):
        conn = sqlite3.connect(db)
        conn.execute("DELETE FROM head")
        conn.commit()
        conn.close()


def append_forged(db: Path) -> int:
    """Append a chained ``approval.decision`` record nobody made; return its id."""
    conn = sqlite3.connect(db)
    last = conn.execute("SELECT * FROM events ORDER BY id DESC LIMIT 1").fetchone()
    row = (last[0] + 1, last[1] + 1, "approval.decision", "alice", "s1", "shell", "approved",
           "critical", json.dumps({"command": "rm -rf /"}), None, None, json.dumps({"by": "alice"}))
    conn.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                 (*row, record_hash(last[12], row)))
    conn.commit()
    conn.close()
    return int(row[0])


def resign_with_own_key(db: Path) -> str:
    """Sign the head and every checkpoint with a fresh key of the attacker's; put it in .pub.

    Returns the attacker's public key (hex).
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw().hex()
    conn = sqlite3.connect(db)
    last_id, last_hash = conn.execute(
        "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    ts = time.time()
    sig = key.sign(checkpoint_message(last_id, last_hash, ts, "head")).hex()
    for seq, in conn.execute("SELECT seq FROM checkpoints").fetchall():
        h = conn.execute("SELECT hash FROM events WHERE id=?", (seq,)).fetchone()[0]
        conn.execute("UPDATE checkpoints SET hash=?, ts=?, signature=?, public_key=? WHERE seq=?",
                     (h, ts, key.sign(checkpoint_message(seq, h, ts)).hex(), pub, seq))
    if "head" in tables(db):
        conn.execute("UPDATE head SET seq=?, hash=?, ts=?, signature=?, public_key=?",
                     (last_id, last_hash, ts, sig, pub))
    conn.commit()
    conn.close()
    head_file = db.with_name(db.name + ".head")
    if head_file.exists():
        head_file.write_text(json.dumps({"seq": last_id, "hash": last_hash, "ts": ts,
                                         "signature": sig, "public_key": pub}))
    db.with_name(db.stem + "-signing.pub").write_text(pub + "\n")
    return pub

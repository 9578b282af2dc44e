"""The audit log on real SQLite files: chain, checkpoints, tamper detection, retention."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bastion.errors import AuditError
from bastion.security.audit import AuditLog, verify
from bastion.security.redact import Redactor


def filled(tmp_path: Path, n: int = 50, **kw: object) -> AuditLog:
    log = AuditLog(tmp_path / "audit.db", Redactor(), checkpoint_every=10, **kw)  # type: ignore[arg-type]
    for i in range(n):
        log.record("tool_call", actor="agent", session_id=f"s{i % 3}", tool="shell",
                   decision="allowed" if i % 5 else "denied", risk="low",
                   arguments={"command": f"echo {i}"}, result=f"out {i}", duration_ms=i,
                   detail={"i": i})
    log.flush()
    return log


def test_records_chain_and_verify(tmp_path: Path) -> None:
    log = filled(tmp_path)
    rep = log.verify()
    assert rep.ok, rep.summary()
    assert rep.checked == 50 and rep.checkpoints == 5
    newest = log.events(limit=1)[0]
    assert newest.id == 50 and newest.arguments == {"command": "echo 49"}
    assert [e.id for e in log.events(session_id="s0", limit=3)] == [49, 46, 43]
    assert {e.decision for e in log.events(decision="denied", limit=100)} == {"denied"}
    assert log.stats()["by_decision"] == {"allowed": 40, "denied": 10}
    log.close()


def test_receipt_wait_returns_the_stored_id(tmp_path: Path) -> None:
    log = filled(tmp_path, 3)
    receipt = log.record("x")
    assert log.wait(receipt) == 4

    async def go() -> int:
        return await log.durable(log.record("y"))

    assert asyncio.run(go()) == 5
    log.close()
    with pytest.raises(AuditError):
        log.record("after close")


def _tamper(path: Path, *sql: str) -> None:
    db = sqlite3.connect(path)
    for s in sql:
        db.execute(s)
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("sql", "first_bad", "words"),
    [
        (["UPDATE events SET result = 'nothing to see' WHERE id = 17"], 17, "hash"),
        (["UPDATE events SET ts = ts + 1 WHERE id = 33"], 33, "hash"),
        (["DELETE FROM events WHERE id = 23"], 23, "missing"),
        (["UPDATE events SET id = -1 WHERE id = 12", "UPDATE events SET id = 12 WHERE id = 13",
          "UPDATE events SET id = 13 WHERE id = -1"], 12, "hash"),  # reorder 12 <-> 13
        (["DELETE FROM events WHERE id > 44"], 45, "truncated"),
        (["DELETE FROM events WHERE id > 44", "DELETE FROM checkpoints"], 45, "truncated"),
        (["DELETE FROM events WHERE id < 5"], 1, "missing"),
    ],
)
def test_tampering_is_found_at_the_right_record(
    tmp_path: Path, sql: list[str], first_bad: int, words: str
) -> None:
    log = filled(tmp_path)
    log.close()
    path = tmp_path / "audit.db"
    assert verify(path).ok
    _tamper(path, *sql)
    rep = verify(path)
    assert not rep.ok
    assert rep.first_bad == first_bad, rep.summary()
    assert words in rep.reason


def test_rewritten_chain_is_caught_by_signed_checkpoint(tmp_path: Path) -> None:
    """An attacker who edits a record and recomputes every later hash still fails."""
    from bastion.security._audit_chain import record_hash

    log = filled(tmp_path)
    log.close()
    path = tmp_path / "audit.db"
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET result = 'forged' WHERE id = 25")
    rows = db.execute("SELECT * FROM events ORDER BY id").fetchall()
    prev = rows[23][12]
    for r in rows[24:]:
        prev = record_hash(prev, tuple(r[:12]))
        db.execute("UPDATE events SET hash = ? WHERE id = ?", (prev, r[0]))
    db.commit()
    db.close()
    rep = verify(path)
    assert not rep.ok and rep.first_bad == 21 and "rewritten" in rep.reason


def test_wrong_public_key_fails(tmp_path: Path) -> None:
    log = filled(tmp_path, 20)
    log.close()
    assert not verify(tmp_path / "audit.db", public_key="00" * 32).ok


def test_retention_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    log = filled(tmp_path, 60)
    deleted = log.prune(keep_last=15)
    assert deleted == 45
    rep = log.verify()
    assert rep.ok and rep.anchored_at == 46, rep.summary()
    log.record("after", detail={"x": 1})
    assert log.verify().ok
    retention = log.events(kind="audit.retention")
    assert retention[0].detail == {"deleted": 45, "anchor": 46,
                                   "principal": {"user": "local", "key_id": None}}
    log.close()
    # change the first hex digit (always: 'f' || ... was a no-op for a hash starting with f)
    _tamper(tmp_path / "audit.db", "UPDATE anchors SET prev_hash = CASE WHEN "
            "substr(prev_hash, 1, 1) = 'f' THEN 'e' ELSE 'f' END || substr(prev_hash, 2)")
    assert not verify(tmp_path / "audit.db").ok


def test_records_are_redacted_and_head_is_signed(tmp_path: Path) -> None:
    red = Redactor(["held-canary-Value-123"])
    log = AuditLog(tmp_path / "a.db", red)
    log.record("tool_call", arguments={"password": "pw", "text": "x held-canary-Value-123"},
               result="token ghp_" + "A1b2" * 9)
    log.flush()
    raw = (tmp_path / "a.db").read_bytes() + (tmp_path / "a.db-wal").read_bytes()
    assert b"held-canary-Value-123" not in raw and b"A1b2A1b2" not in raw
    db = sqlite3.connect(tmp_path / "a.db")
    seq, sig = db.execute("SELECT seq, signature FROM head").fetchone()
    db.close()
    assert seq == 1 and len(sig) == 128
    log.close()


def test_two_handles_on_one_database_interleave(tmp_path: Path) -> None:
    a = AuditLog(tmp_path / "a.db")
    b = AuditLog(tmp_path / "a.db")
    for i in range(30):
        (a if i % 2 else b).record("k", detail={"i": i})
        if i % 7 == 0:
            a.flush()
            b.flush()
    a.flush()
    b.flush()
    assert a.verify().ok and a.verify().checked == 30
    a.close()
    b.close()

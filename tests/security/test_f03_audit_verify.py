"""F3 breach tests: `audit verify` must not be fooled by someone who can write the audit
directory but holds no trusted key (review 2026-12, finding F3; probe: audit_probe.py).

Each test is the attack: edit the real SQLite log (and its head, wherever it is kept), then ask
`verify` -- the library call or the real `bastion audit verify` process -- and expect FAILED.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from bastion.security.audit import AuditLog, verify
from tests.security import _audit_attacker as attacker

ROOT = Path(__file__).resolve().parents[2]


def _log(tmp_path: Path, n: int = 20) -> Path:
    db = tmp_path / "audit.db"
    log = AuditLog(db)
    for i in range(n):
        log.record("tool_call", actor="agent", tool="shell",
                   decision="denied" if i == 7 else "allowed", arguments={"command": f"cmd {i}"})
    log.close()
    assert verify(db).ok
    return db


def _bastion(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BASTION_HOME": str(home), "PYTHONPATH": f"{ROOT}/src:{ROOT}"}
    return subprocess.run([sys.executable, "-m", "bastion", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_edited_record_rechained_and_head_deleted_fails(tmp_path: Path) -> None:
    db = _log(tmp_path)
    attacker.rechain(db, 8, "UPDATE events SET decision='allowed' WHERE id=8")
    attacker.delete_head(db)
    rep = verify(db)
    assert not rep.ok, f"edit+rechain with the head deleted passed: {rep.summary()}"
    assert "head" in rep.reason


def test_tail_cut_and_head_deleted_fails(tmp_path: Path) -> None:
    db = _log(tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM events WHERE id > 15")
    conn.commit()
    conn.close()
    attacker.delete_head(db)
    rep = verify(db)
    assert not rep.ok, f"tail truncation with the head deleted passed: {rep.summary()}"


def test_forged_record_after_the_signed_head_fails(tmp_path: Path) -> None:
    db = _log(tmp_path)
    forged = attacker.append_forged(db)
    rep = verify(db)
    assert not rep.ok, f"a forged record after the head passed: {rep.summary()}"
    assert rep.first_bad == forged


def test_forged_record_is_not_laundered_by_bastions_next_write(tmp_path: Path) -> None:
    db = _log(tmp_path)
    forged = attacker.append_forged(db)  # while bastion is stopped
    log = AuditLog(db)  # bastion starts again and writes: its new head must not bless the forgery
    log.wait(log.record("tool_call", tool="shell", decision="allowed"))
    log.close()
    rep = verify(db)
    assert not rep.ok, f"the forged record was signed over by the next head: {rep.summary()}"
    assert rep.first_bad == forged


def test_swapped_public_key_beside_the_log_fails_against_the_key_pinned_at_init(
        bastion_home: Path) -> None:
    init = _bastion(bastion_home, "init", "--yes")
    assert init.returncode == 0, init.stderr
    db = bastion_home / "audit" / "audit.db"
    log = AuditLog(db)  # the key init created
    for i in range(12):
        log.record("tool_call", tool="shell", decision="denied" if i == 7 else "allowed")
    log.close()
    assert verify(db).ok
    # the attack: flip the denial, rechain, re-sign head and checkpoints with an own key and
    # write that key into the trusted-keys file beside the database
    attacker.rechain(db, 8, "UPDATE events SET decision='allowed' WHERE id=8")
    attacker.resign_with_own_key(db)
    default = _bastion(bastion_home, "audit", "verify")
    assert default.returncode == 2 and "FAILED" in default.stdout, default.stdout + default.stderr
    pins = yaml.safe_load((bastion_home / "bastion.yaml").read_text())["audit"]
    fingerprint = pins["key_fingerprints"][0]
    assert fingerprint in init.stderr  # printed at init, for the user's own notes
    explicit = _bastion(bastion_home, "audit", "verify", "--fingerprint", fingerprint)
    assert explicit.returncode == 2 and "FAILED" in explicit.stdout, explicit.stdout


def test_rollback_to_an_old_signed_copy_is_caught_by_the_anchor(bastion_home: Path,
                                                               tmp_path: Path) -> None:
    from bastion.config.loader import load
    from bastion.security.redact import Redactor
    from bastion.security.setup import build_audit

    anchor = tmp_path / "remote" / "audit-heads.log"  # e.g. a remote append-only mount
    anchor.parent.mkdir()
    (bastion_home / "bastion.yaml").write_text(yaml.safe_dump(
        {"audit": {"anchor": {"file": str(anchor)}}}))
    log = build_audit(load(), Redactor())
    for i in range(10):
        log.wait(log.record("tool_call", tool="shell", decision="allowed", detail={"i": i}))
    old = tmp_path / "old.db"  # the attacker keeps a genuinely signed copy ...
    with sqlite3.connect(old) as dst:
        src = sqlite3.connect(log.path)
        src.backup(dst)
        src.close()
    for i in range(5):  # ... bastion records what the attacker wants gone ...
        log.wait(log.record("tool_call", tool="shell", decision="denied", detail={"gone": i}))
    log.close()
    db = log.path
    for suffix in ("-wal", "-shm"):  # ... and the attacker puts the old copy back
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(old, db)
    rep = _bastion(bastion_home, "audit", "verify")
    assert rep.returncode == 2 and "FAILED" in rep.stdout, rep.stdout + rep.stderr
    assert "rolled back" in rep.stdout


def test_rollback_is_caught_from_what_a_syslog_collector_received(tmp_path: Path) -> None:
    import socket

    from bastion.security._audit_anchor import SyslogAnchor

    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a SIEM's syslog input
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(5)
    db = tmp_path / "audit.db"
    log = AuditLog(db, anchor=SyslogAnchor("127.0.0.1", collector.getsockname()[1]))
    log.wait(log.record("tool_call", tool="shell", decision="allowed"))
    with sqlite3.connect(tmp_path / "old.db") as old:
        src = sqlite3.connect(db)
        src.backup(old)
        src.close()
    log.wait(log.record("tool_call", tool="shell", decision="denied"))
    log.close()
    received = [collector.recv(4096).decode() for _ in range(2)]
    collector.close()
    export = tmp_path / "siem-export.log"
    export.write_text("\n".join(received) + "\n")
    assert received[0].startswith("<134>1 ") and "audit-head" in received[0]
    assert verify(db, anchor=export).ok
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(tmp_path / "old.db", db)
    assert verify(db).ok  # without the anchor a rollback to a genuine copy is not visible
    rep = verify(db, anchor=export)
    assert not rep.ok and "rolled back" in rep.reason, rep.summary()


def test_proof_signed_by_a_key_swapped_in_beside_the_log_fails(bastion_home: Path,
                                                               tmp_path: Path) -> None:
    from bastion.crypto.keys import FileSigner
    from bastion.security.audit_proofs import prove_event

    assert _bastion(bastion_home, "init", "--yes").returncode == 0
    db = bastion_home / "audit" / "audit.db"
    log = AuditLog(db)
    for i in range(4):
        log.record("tool_call", tool="shell", decision="denied" if i == 2 else "allowed")
    log.close()
    attacker.rechain(db, 3, "UPDATE events SET decision='allowed' WHERE id=3")
    own = FileSigner(tmp_path / "attacker.key")  # the attacker's own key ...
    db.with_name("audit-signing.pub").write_text(own.public_hex + "\n")  # ... made "trusted"
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(prove_event(db, 3, own)))
    r = _bastion(bastion_home, "audit", "verify-proof", str(proof))
    assert r.returncode == 2 and "not a trusted audit key" in r.stdout, r.stdout + r.stderr

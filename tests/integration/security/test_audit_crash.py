"""SIGKILL during heavy writing: the chain still verifies and every acknowledged record is there."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from bastion.security.audit import AuditLog, verify


def test_sigkill_during_heavy_writes(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.security._audit_writer_proc", str(db)],
        stdout=subprocess.PIPE, text=True, cwd=root,
        env={**os.environ, "PYTHONPATH": f"{root}/src:{root}"})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    acked: list[int] = []
    while len(acked) < 400:  # let it write a few thousand records first
        line = proc.stdout.readline()
        assert line, "writer died"
        acked.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # acknowledgements printed before the kill landed
    acked += [int(x) for x in rest.split()]
    proc.wait()
    rep = verify(db)
    assert rep.ok, rep.summary()
    # the signed head is committed with its records: a killed writer leaves no unsigned tail
    assert rep.head_seq == rep.last_id, rep.summary()
    conn = sqlite3.connect(db)
    present = {r[0] for r in conn.execute("SELECT id FROM events")}
    conn.close()
    missing = [a for a in acked if a not in present]
    assert not missing, f"acknowledged records lost: {missing[:5]}"
    assert rep.checked >= max(acked) and rep.checkpoints >= 1
    # the log keeps working after the crash: a new writer continues the chain
    log = AuditLog(db)
    log.wait(log.record("after-crash"))
    assert log.verify().ok
    log.close()

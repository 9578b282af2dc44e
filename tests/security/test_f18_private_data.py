"""F18 breach test: another local user must not read bastion's data (review 2026-12, F18).

The attack: a second account on the same host (here the real uid ``nobody``, via setuid in a
child process) lists and reads whatever it can under bastion's home after normal use through
the real CLI: ``init``, a sandboxed run (workspace file, run record, audit record) and the
memory database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534

pytestmark = [pytest.mark.needs_root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another uid")]


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A world-traversable parent, as /home or /var/lib are: bastion's home is created in it."""
    base = Path(tempfile.mkdtemp(prefix="bastion-f18-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "BASTION_HOME": str(home), "PYTHONPATH": f"{ROOT}/src:{ROOT}"}


def _bastion(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args], env=_env(home), cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _readable_by_nobody(home: Path) -> list[str]:
    """What uid nobody can list or read under ``home`` (find's -readable uses access(2))."""
    r = subprocess.run(["find", str(home), "-readable"], preexec_fn=_become_nobody,
                       capture_output=True, text=True, timeout=60, check=False)
    return r.stdout.split()


def test_files_from_normal_use_are_not_readable_by_another_user(open_base: Path) -> None:
    home = open_base / "bastion"  # created by bastion on first use
    assert _bastion(home, "init", "--yes").returncode == 0
    assert _bastion(home, "sessions", "list").returncode == 0  # opens the memory database
    run = subprocess.Popen(
        [sys.executable, "-m", "bastion", "sandbox", "run", "--backend", "bubblewrap", "--",
         "sh", "-c", "echo private notes > notes.txt; sleep 3"],
        env=_env(home), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = home / "sandbox" / "running"
    deadline = time.monotonic() + 60
    while not (records.is_dir() and any(records.glob("*.json"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    during = _readable_by_nobody(home)  # while the run record exists
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    after = _readable_by_nobody(home)
    made = [home / "audit" / "audit.db", home / "memory" / "memory.db",
            home / "workspace" / "notes.txt", home / "bastion.yaml"]
    assert all(p.exists() for p in made), [p for p in made if not p.exists()]
    leaked = sorted(set(during) | set(after))
    assert not leaked, f"readable by uid {NOBODY}: {leaked[:8]}"
    assert oct((home / "audit" / "audit.db").stat().st_mode & 0o777) == "0o600"
    assert oct(home.stat().st_mode & 0o777) == "0o700"


def test_a_home_left_open_is_reported_by_doctor_and_tightened_on_use(open_base: Path) -> None:
    home = open_base / "bastion"  # as an older version left it: open to everyone
    (home / "workspace").mkdir(parents=True, mode=0o755)
    (home / "workspace" / "draft.txt").write_text("private draft")
    home.chmod(0o755)
    doctor = _bastion(home, "doctor")
    row = [line for line in doctor.stdout.splitlines() if "private data" in line]
    assert row and "WARN" in row[0] and "was readable by other" in row[0], doctor.stdout
    assert home.stat().st_mode & 0o077 == 0 and not _readable_by_nobody(home)
    home.chmod(0o755)
    assert _bastion(home, "sessions", "list").returncode == 0  # any use tightens it too
    assert home.stat().st_mode & 0o077 == 0 and not _readable_by_nobody(home)

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from bastion.errors import MemoryStoreError
from bastion.memory.vectors import _flock


def test_lock_waits_then_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    other = os.open(path, os.O_RDWR)
    try:
        _flock(holder, fcntl.LOCK_EX, 1.0)
        with pytest.raises(MemoryStoreError, match="locked by another process"):
            _flock(other, fcntl.LOCK_SH, 0.05)
        fcntl.flock(holder, fcntl.LOCK_UN)
        _flock(other, fcntl.LOCK_SH, 0.05)  # free again: readers share
        _flock(holder, fcntl.LOCK_SH, 0.05)
    finally:
        os.close(holder)
        os.close(other)

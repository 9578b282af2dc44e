"""The undo store's logic on a real filesystem: copies, racy rewrites, pruning."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bastion.security.undo import UndoStore
from bastion.security.undo import store as store_mod


def _store(tmp_path: Path, **kw: float) -> tuple[UndoStore, Path]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("alpha")
    (ws / "big.bin").write_bytes(b"x" * 200_000)
    time.sleep(0.05)  # older than the racy window: the stat is trusted from now on
    return UndoStore(ws, tmp_path / "store", **kw), ws  # type: ignore[arg-type]


def test_unchanged_files_are_not_copied_again(tmp_path: Path) -> None:
    store, ws = _store(tmp_path)
    store.before()
    kept = len(os.listdir(store.objects))
    assert kept == 2
    for i in range(5):
        before = store.before()
        (ws / "a.txt").write_text(f"v{i}")
        assert store.after(before, call_id=f"c{i}", session_id="s", tool="t") is not None
    # one new copy per call (the small file the previous call changed), never big.bin again
    assert len(os.listdir(store.objects)) == kept + 4
    assert store.calls("s")[0].changes[0].line() == "~ a.txt (modified, 2 -> 2 bytes)"


def test_a_rewrite_the_stat_cannot_see_is_still_recorded(tmp_path: Path) -> None:
    store, ws = _store(tmp_path)
    before = store.before()
    entry = before["a.txt"]
    entry.racy = True  # copied right after a change: within the timestamp granularity
    (ws / "a.txt").write_text("ALPHA")  # same size
    after_key = store_mod.scan(str(ws))["a.txt"].key
    entry.key = after_key  # what a coarse-timestamp filesystem reports: nothing moved
    changed = store.after(before, call_id="c1", session_id="s", tool="t")
    assert changed is not None and [c.path for c in changed.changes] == ["a.txt"]
    store.undo("s")
    assert (ws / "a.txt").read_text() == "alpha"


def test_pruning_by_age_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "_GRACE_S", -1.0)  # no call is in flight here
    store, ws = _store(tmp_path, max_bytes=450_000)
    for i in range(3):  # each call rewrites big.bin: a new 200 kB copy per call
        before = store.before()
        (ws / "big.bin").write_bytes(bytes([i]) * 200_000)
        store.after(before, call_id=f"c{i}", session_id="s", tool="t")
    store.prune()
    left = [c.call_id for c in store.calls("s")]
    assert left and "c0" not in left  # the oldest went first, to get under 80% of 450 kB
    assert sum(p.stat().st_size for p in store.objects.iterdir()) <= 450_000
    store.max_age_s = 0.0
    store.prune()
    assert store.calls("s") == []
    with pytest.raises(Exception, match="nothing to undo"):
        store.undo("s")

"""``paths.write_private``: whole, private and unique-per-writer replacement of a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.config import paths


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """A folder of its own (the suite's fixtures keep a bastion home in ``tmp_path``)."""
    folder = tmp_path / "here"
    folder.mkdir()
    return folder


def test_the_file_is_private_whatever_the_umask(here: Path) -> None:
    old = os.umask(0o022)
    try:
        target = paths.write_private(here / "record.json", '{"a": 1}')
    finally:
        os.umask(old)
    assert target.read_text() == '{"a": 1}'
    assert (target.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in here.iterdir()] == ["record.json"]


def test_another_writers_temporary_file_is_left_alone(here: Path) -> None:
    target = here / "cache.json"
    # what a writer with a fixed temporary name would be holding at this moment
    theirs = [here / "cache.tmp", here / "cache.json.tmp"]
    for t in theirs:
        t.write_text("half of another writer's record")
    paths.write_private(target, b"mine")
    assert target.read_bytes() == b"mine"
    assert all(t.read_text() == "half of another writer's record" for t in theirs)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
        here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = here / "manifest.json"
    target.write_text("old")

    def refuse(_src: str, _dst: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(paths.os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        paths.write_private(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in here.iterdir()] == ["manifest.json"]

"""Undo for the workspace: per-call snapshots, their diffs and restores (``bastion undo``)."""

from __future__ import annotations

from bastion.security.undo._report import CallChanges, Change, UndoReport
from bastion.security.undo.stage import UndoStage
from bastion.security.undo.store import UndoStore, open_store, store_dir

__all__ = ["CallChanges", "Change", "UndoReport", "UndoStage", "UndoStore", "open_store",
           "store_dir"]

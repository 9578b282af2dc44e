"""The gateway stage that makes workspace changes undoable.

It sits just before the tool runs (after policy, approval and secrets), so only calls that
really run are snapshotted. A tool that declares ``read_only = True`` (``list_files``,
``read_file``, ``web_fetch``) is passed straight through; every other tool, sandboxed code
and unknown plugin or MCP tools alike, is treated as one that may change the workspace.
"""

from __future__ import annotations

import asyncio

from bastion.security.gateway import CallRequest, Next, ToolResult, denied
from bastion.security.undo.store import UndoStore


class UndoStage:
    """Snapshot the workspace before a mutating call; record what it changed after."""

    def __init__(self, store: UndoStore) -> None:
        self.store = store

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Run the call between a snapshot and a diff (annotated as ``undo`` for the audit)."""
        if getattr(req.tool, "read_only", False):
            return await nxt(req)
        try:
            before = await asyncio.to_thread(self.store.before)
        except OSError as exc:  # fail closed: a change we could not undo is not made
            return denied(req, f"{req.tool.name} refused: the workspace snapshot failed "
                               f"({exc.strerror or exc}); fix the workspace or set "
                               "undo.enabled: false")
        try:
            return await nxt(req)
        finally:
            changed = await asyncio.to_thread(
                self.store.after, before, call_id=req.call.id, session_id=req.session_id,
                tool=req.tool.name)
            if changed is not None:
                req.annotations["undo"] = changed.counts()

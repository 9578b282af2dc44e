"""What a call changed (``Change``, ``CallChanges``) and what an undo did (``UndoReport``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bastion.security.undo._scan import Entry


@dataclass(slots=True, frozen=True)
class Change:
    """One path a call changed, with its state before the call."""

    path: str
    change: str  # added | modified | deleted
    before: Entry | None
    after_kind: str | None = None
    after_size: int | None = None

    @property
    def restorable(self) -> bool:
        """Return whether the state before can be put back (a file's content was kept)."""
        b = self.before
        return b is None or b.kind != "f" or b.obj is not None

    def line(self) -> str:
        """Return one line for a diff summary, e.g. ``- notes.txt (deleted, 12 bytes)``."""
        b = self.before
        kind = {"d": "directory", "l": "link"}.get((b.kind if b else self.after_kind) or "", "")
        what = f"{self.change} {kind}".strip()
        if self.change == "added":
            size = f", {self.after_size} bytes" if self.after_kind == "f" else ""
            return f"+ {self.path} ({what}{size})"
        if self.change == "deleted":
            size = f", {b.size} bytes" if b is not None and b.kind == "f" else ""
            lost = "" if self.restorable else "; content not kept"
            return f"- {self.path} ({what}{size}{lost})"
        sizes = ""
        if b is not None and b.kind == "f" and self.after_kind == "f":
            sizes = f", {b.size} -> {self.after_size} bytes"
        lost = "" if self.restorable else "; content not kept"
        return f"~ {self.path} ({what}{sizes}{lost})"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        b = self.before
        return {"path": self.path, "change": self.change,
                "before": None if b is None else {"kind": b.kind, "mode": oct(b.mode),
                                                  "size": b.size if b.kind == "f" else None},
                "after": None if self.after_kind is None else {
                    "kind": self.after_kind, "size": self.after_size},
                "restorable": self.restorable}


@dataclass(slots=True)
class CallChanges:
    """What one mutating tool call changed in the workspace."""

    seq: int
    call_id: str
    session_id: str | None
    tool: str
    ts: float
    changes: list[Change] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Return ``{"added": n, "modified": n, "deleted": n}``."""
        out = {"added": 0, "modified": 0, "deleted": 0}
        for c in self.changes:
            out[c.change] += 1
        return out

    def headline(self) -> str:
        """Return e.g. ``call c1 (shell, 10:31:02): 3 deleted, 1 modified``."""
        counts = ", ".join(f"{n} {k}" for k, n in self.counts().items() if n)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.ts))
        return f"call {self.call_id} ({self.tool}, {when}): {counts}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"call_id": self.call_id, "session_id": self.session_id, "tool": self.tool,
                "ts": self.ts, "counts": self.counts(),
                "changes": [c.to_dict() for c in self.changes]}


@dataclass(slots=True)
class UndoReport:
    """The outcome of an undo (or of its dry run)."""

    session_id: str | None
    calls: list[CallChanges]
    dry_run: bool
    restored: list[tuple[str, str]] = field(default_factory=list)  # (path, action)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    def lines(self) -> list[str]:
        """Return the report as lines: per call its diff, then what was (or would be) done."""
        out: list[str] = []
        for call in self.calls:
            out.append(("would undo " if self.dry_run else "undid ") + call.headline())
            out += ["  " + c.line() for c in call.changes]
        for path, action in self.restored:  # action: "restore" | "remove"
            out.append(f"would {action} {path}" if self.dry_run else f"{action}d {path}")
        for path, why in self.failed:
            out.append(f"could not restore {path}: {why}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"session_id": self.session_id, "dry_run": self.dry_run,
                "calls": [c.to_dict() for c in self.calls],
                "restored": [{"path": p, "action": a} for p, a in self.restored],
                "failed": [{"path": p, "error": w} for p, w in self.failed]}

"""Workspace snapshots per mutating tool call, and putting them back (``bastion undo``).

Before a call that may change the workspace runs, :meth:`UndoStore.before` lists the workspace
(stat only) and keeps a copy of each file whose content is not kept yet: a file whose inode,
size, mtime and ctime match the kept copy is not copied again, so an unchanged workspace costs
one ``stat`` per entry (the first snapshot, and files changed since the last one, are copied;
by reflink where the filesystem shares extents, else in-kernel ``copy_file_range``).
:meth:`UndoStore.after` lists it again and records, per call, what was added, modified or
deleted together with the state before. :meth:`UndoStore.undo` restores the paths the last N
calls of a session changed to their state before the earliest of them.

The store (SQLite + one file per kept content) lives in bastion's data directory, outside the
workspace, where sandboxed code cannot reach it. Old calls are pruned by age and total size.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.config import paths
from bastion.config.model import Config
from bastion.errors import BastionError, NotFoundError
from bastion.security.undo import _restore
from bastion.security.undo._report import CallChanges, Change, UndoReport
from bastion.security.undo._scan import Entry, copy_file, entry_key, scan
from bastion.tools.builtin._paths import open_parent_nofollow

if TYPE_CHECKING:
    from bastion.security.audit import AuditLog

#: a file changed less than this before it was copied may change again unseen within the
#: filesystem's timestamp granularity; its stat is not trusted at the next snapshot
_RACY_NS = 20_000_000  # above the coarsest kernel timestamp tick (10 ms at HZ=100)
_GRACE_S = 900.0  # unreferenced copies younger than this may belong to a call in flight
_PRUNE_EVERY_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (id TEXT PRIMARY KEY, size INTEGER NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS current (
    path TEXT PRIMARY KEY, mode INTEGER, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER,
    ino INTEGER, dev INTEGER, obj TEXT NOT NULL, racy INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, session_id TEXT,
    tool TEXT NOT NULL, ts REAL NOT NULL, undone_at REAL);
CREATE INDEX IF NOT EXISTS calls_session ON calls(session_id, seq);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER NOT NULL, path TEXT NOT NULL, change TEXT NOT NULL,
    kind TEXT, mode INTEGER, size INTEGER, mtime_ns INTEGER, obj TEXT, target TEXT,
    after_kind TEXT, after_size INTEGER, PRIMARY KEY (seq, path));
CREATE INDEX IF NOT EXISTS changes_obj ON changes(obj);
"""


def store_dir(data_dir: Path, workspace: Path) -> Path:
    """Return the store folder for ``workspace`` under bastion's ``undo`` data directory."""
    key = hashlib.sha256(str(workspace).encode()).hexdigest()[:16]
    return data_dir / key


class UndoStore:
    """Snapshots of one workspace, recorded per tool call, and their restore."""

    def __init__(
        self,
        workspace: Path,
        root: Path,
        *,
        max_age_s: float = 72 * 3600.0,
        max_bytes: int = 2048 * 2**20,
        max_file_bytes: int = 256 * 2**20,
    ) -> None:
        self.workspace = Path(workspace)
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in (self.root, self.objects):
            folder.chmod(0o700)
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.max_file_bytes = max_file_bytes
        self._db = sqlite3.connect(self.root / "undo.db", check_same_thread=False,
                                   isolation_level=None, timeout=30.0)
        (self.root / "undo.db").chmod(0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db_lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._base: dict[str, Entry] = self._load_current()
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM objects")
                          .fetchone()[0])
        self._pruned = 0.0

    # ---- snapshots -----------------------------------------------------------------------
    def before(self) -> dict[str, Entry]:
        """List the workspace and keep what a call may change; return the listing."""
        with self._scan_lock:
            if self._bytes > self.max_bytes * 0.9:
                self.prune()
            fresh: list[tuple[str, Entry]] = []

            def keep(rel: str, e: Entry, dir_fd: int) -> str | None:
                if e.size > self.max_file_bytes or self._bytes + e.size > self.max_bytes:
                    return None
                obj = secrets.token_hex(16)
                now = time.time_ns()
                if not copy_file(dir_fd, rel.rsplit("/", 1)[-1], e, str(self.objects / obj)):
                    return None
                e.racy = e.ctime_ns + _RACY_NS >= now
                self._bytes += e.size
                fresh.append((obj, e))
                return obj

            listing = scan(str(self.workspace), keep, self._base)
            self._persist(listing, fresh)
            self._base = listing
            return listing

    def _persist(self, listing: dict[str, Entry], fresh: list[tuple[str, Entry]]) -> None:
        gone = [p for p, b in self._base.items()  # kept files that left (dirs have no copy)
                if b.obj is not None and ((e := listing.get(p)) is None or e.obj is None)]
        fresh_ids = {obj for obj, _ in fresh}
        upserts = [(p, e.mode, e.size, e.mtime_ns, e.ctime_ns, e.ino, e.dev, e.obj, int(e.racy))
                   for p, e in listing.items() if e.obj in fresh_ids]
        if not (gone or upserts):
            return
        now = time.time()
        with self._tx() as db:
            db.executemany("INSERT INTO objects VALUES (?, ?, ?)",
                           [(obj, e.size, now) for obj, e in fresh])
            db.executemany("DELETE FROM current WHERE path = ?", [(p,) for p in gone])
            db.executemany("INSERT OR REPLACE INTO current VALUES (?,?,?,?,?,?,?,?,?)", upserts)

    def after(
        self, before: dict[str, Entry], *, call_id: str, session_id: str | None, tool: str
    ) -> CallChanges | None:
        """List the workspace again and record what the call changed (None: nothing)."""
        now = scan(str(self.workspace))
        changes: list[Change] = []
        for path, b in before.items():
            a = now.get(path)
            if a is None:
                changes.append(Change(path, "deleted", b))
            elif not b.same(a) or (b.racy and not self._same_content(path, b)):
                changes.append(Change(path, "modified", b, a.kind, a.size))
        for path, a in now.items():
            if path not in before:
                changes.append(Change(path, "added", None, a.kind, a.size))
        if not changes:
            return None
        changes.sort(key=lambda c: c.path)
        ts = time.time()
        with self._tx() as db:
            cur = db.execute("INSERT INTO calls (call_id, session_id, tool, ts) VALUES (?,?,?,?)",
                             (call_id, session_id, tool, ts))
            seq = int(cur.lastrowid or 0)
            db.executemany("INSERT INTO changes VALUES (?,?,?,?,?,?,?,?,?,?,?)", [
                (seq, c.path, c.change, *(_before_row(c.before)), c.after_kind, c.after_size)
                for c in changes])
        if ts - self._pruned > _PRUNE_EVERY_S:
            self.prune()
        return CallChanges(seq, call_id, session_id, tool, ts, changes)

    def _same_content(self, path: str, kept: Entry) -> bool:
        """Compare a file with its kept copy, for entries copied just after a change.

        On filesystems with coarse timestamps a rewrite in the same tick leaves size, mtime
        and ctime as they were, so for those entries the stat alone is not trusted.
        """
        if kept.obj is None:
            return True  # nothing to compare with; the stat said unchanged
        try:
            fd, name = open_parent_nofollow(self.workspace, path)
        except (BastionError, OSError):
            return False
        try:
            with open(name, "rb", opener=lambda n, f: os.open(
                    n, f | os.O_NOFOLLOW, dir_fd=fd)) as cur, (self.objects / kept.obj).open(
                    "rb") as old:
                while True:
                    a, b = cur.read(1 << 20), old.read(1 << 20)
                    if a != b:
                        return False
                    if not a:
                        return True
        except OSError:
            return False
        finally:
            os.close(fd)

    # ---- reading -------------------------------------------------------------------------
    def calls(self, session_id: str | None, limit: int = 50) -> list[CallChanges]:
        """Return the session's calls that can still be undone, newest first."""
        with self._db_lock:
            rows = self._db.execute(
                "SELECT seq, call_id, session_id, tool, ts FROM calls WHERE session_id IS ? "
                "AND undone_at IS NULL ORDER BY seq DESC LIMIT ?", (session_id, limit)).fetchall()
            out = [CallChanges(*r) for r in rows]
            for call in out:
                call.changes = [_change(r) for r in self._db.execute(
                    "SELECT path, change, kind, mode, size, mtime_ns, obj, target, after_kind, "
                    "after_size FROM changes WHERE seq = ? ORDER BY path", (call.seq,))]
        return out

    def last_session(self) -> str | None:
        """Return the session of the newest call that can be undone (NotFoundError: none)."""
        with self._db_lock:
            row = self._db.execute("SELECT session_id FROM calls WHERE undone_at IS NULL "
                                   "ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            raise NotFoundError("no tool call can be undone in this workspace",
                                fix="only calls that changed the workspace are kept (see "
                                    "undo.max_age_hours)")
        return row[0] if row[0] is None else str(row[0])

    # ---- undo ----------------------------------------------------------------------------
    def undo(
        self,
        session_id: str | None,
        n: int = 1,
        *,
        dry_run: bool = False,
        audit: AuditLog | None = None,
        actor: str = "user",
    ) -> UndoReport:
        """Restore the paths the last ``n`` calls of the session changed (newest first)."""
        if n < 1:
            raise BastionError("the number of calls to undo must be at least 1",
                               fix="bastion undo 1")
        calls = self.calls(session_id, n)
        if not calls:
            raise nothing_to_undo(session_id)
        report = UndoReport(session_id, calls, dry_run)
        target: dict[str, Change] = {}
        for call in reversed(calls):  # the oldest call's "before" wins
            for c in call.changes:
                target.setdefault(c.path, c)
        with self._scan_lock:
            for c in sorted(target.values(), key=lambda c: -c.path.count("/")):
                if c.before is None:
                    self._apply(report, c.path, "remove", None)
            for c in sorted(target.values(), key=lambda c: (c.path.count("/"), c.path)):
                if c.before is not None:
                    self._apply(report, c.path, "restore", c.before)
        if not dry_run:
            with self._tx() as db:
                db.executemany("UPDATE calls SET undone_at = ? WHERE seq = ?",
                               [(time.time(), c.seq) for c in calls])
        if audit is not None:
            audit.record("undo", actor=actor, session_id=session_id,
                         decision="dry_run" if dry_run else "restored",
                         detail={"calls": [c.call_id for c in calls],
                                 "restored": len(report.restored),
                                 "failed": [p for p, _ in report.failed],
                                 "paths": sorted(target)[:200]})
        return report

    def _apply(self, report: UndoReport, path: str, action: str, before: Entry | None) -> None:
        if before is not None and before.kind == "f" and before.obj is None:
            report.failed.append((path, "its content was not kept (too large or unreadable)"))
            return
        obj = self.objects / before.obj if before is not None and before.obj else None
        if obj is not None and not obj.exists():
            report.failed.append((path, "its kept content was pruned"))
            return
        if report.dry_run:
            report.restored.append((path, action))
            return
        try:
            if before is None:
                if not _restore.remove(self.workspace, path):
                    return
            else:
                _restore.restore(self.workspace, path, before, obj)
        except BastionError as exc:
            report.failed.append((path, exc.message))
            return
        except OSError as exc:
            report.failed.append((path, exc.strerror or str(exc)))
            return
        report.restored.append((path, action))

    # ---- pruning -------------------------------------------------------------------------
    def prune(self) -> int:
        """Forget calls older than the age limit, then the oldest until under the size limit.

        Returns how many kept copies were deleted.
        """
        now = time.time()
        self._pruned = now
        with self._tx() as db:
            old = [r[0] for r in db.execute("SELECT seq FROM calls WHERE ts < ?",
                                            (now - self.max_age_s,))]
            _forget(db, old)
        removed = self._collect(now)
        while self._bytes > self.max_bytes * 0.8:
            with self._tx() as db:
                row = db.execute("SELECT seq FROM calls ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    break
                _forget(db, [row[0]])
            removed += self._collect(now)
        return removed

    def _collect(self, now: float) -> int:
        with self._tx() as db:
            dead = db.execute(
                "SELECT id, size FROM objects WHERE ts < ? AND id NOT IN "
                "(SELECT obj FROM current) AND id NOT IN "
                "(SELECT obj FROM changes WHERE obj IS NOT NULL)", (now - _GRACE_S,)).fetchall()
            db.executemany("DELETE FROM objects WHERE id = ?", [(d[0],) for d in dead])
        for obj, size in dead:
            (self.objects / obj).unlink(missing_ok=True)
            self._bytes -= int(size)
        return len(dead)

    def close(self) -> None:
        """Close the database."""
        with self._db_lock:
            self._db.close()

    # ---- helpers -------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _load_current(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for path, mode, size, mtime, ctime, ino, dev, obj, racy in self._db.execute(
                "SELECT * FROM current"):
            e = Entry("f", mode, size, mtime, ctime, ino, dev, None, obj, bool(racy))
            e.key = entry_key(e)
            out[path] = e
        return out


def _forget(db: sqlite3.Connection, seqs: list[int]) -> None:
    db.executemany("DELETE FROM changes WHERE seq = ?", [(s,) for s in seqs])
    db.executemany("DELETE FROM calls WHERE seq = ?", [(s,) for s in seqs])


def _before_row(b: Entry | None) -> tuple[Any, ...]:
    if b is None:
        return (None,) * 6
    return (b.kind, b.mode, b.size, b.mtime_ns, b.obj, b.target)


def _change(r: tuple[Any, ...]) -> Change:
    path, change, kind, mode, size, mtime_ns, obj, target, after_kind, after_size = r
    before = None if kind is None else Entry(kind, mode, size, mtime_ns, target=target, obj=obj)
    if before is not None:
        before.key = entry_key(before)
    return Change(path, change, before, after_kind, after_size)


def open_store(config: Config, workspace: Path) -> UndoStore:
    """Open the undo store of ``workspace`` with the limits of ``config.undo``."""
    u = config.undo
    return UndoStore(workspace, store_dir(paths.data_dir("undo"), workspace),
                     max_age_s=u.max_age_hours * 3600, max_bytes=u.max_total_mb * 2**20,
                     max_file_bytes=u.max_file_mb * 2**20)


def nothing_to_undo(session_id: str | None) -> NotFoundError:
    """Return the error for a session without undoable calls."""
    return NotFoundError(f"nothing to undo in session {session_id or '(none)'}",
                         fix="list what can be undone: bastion undo --list")

"""The task store: ``HOME/tasks.db`` (SQLite, 0600), one row per task, names unique per owner.

It survives restarts and is shared by ``bastion serve`` (the scheduler) and the local CLI: a
change bumps a generation counter the scheduler reads on each tick, so a task added with
``bastion task add`` is scheduled within a second, with no restart.

Besides the tasks it keeps:

- ``fires``: a queue of manual fires (``bastion task run-now`` while the server runs
  elsewhere) and the record of every fire (its trigger and run id, or why none started);
- ``nonces``: the nonces of signed webhook triggers already accepted, so a replay is refused
  after a restart too (pruned once older than the timestamp window).

Webhook secrets are never stored: a task keeps a random salt, and its secret is
``HMAC-SHA-256(HOME/tasks.key, owner/name/salt)``, recomputed to check a signature. The key
file (32 random bytes, 0600) is not in the database, so a copy of ``tasks.db`` alone cannot
sign a trigger; ``bastion task secret NAME --rotate`` draws a new salt.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import ConfigError, NotFoundError
from bastion.security.keystore import load_pepper
from bastion.tasks.spec import TaskSpec, Trigger

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    salt TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_fire REAL,
    UNIQUE (owner, name)
);
CREATE TABLE IF NOT EXISTS fires (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    fired_at REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL DEFAULT '',
    queued INTEGER NOT NULL DEFAULT 0,
    run_id TEXT,
    error TEXT,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS fires_queued ON fires (queued) WHERE queued = 1;
CREATE INDEX IF NOT EXISTS fires_task ON fires (task_id, id);
CREATE TABLE IF NOT EXISTS nonces (
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    nonce TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (task_id, nonce)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0);
"""


@dataclass(frozen=True, slots=True)
class StoredTask:
    """A task as stored: its spec plus bookkeeping."""

    id: int
    spec: TaskSpec
    created_at: float
    updated_at: float
    last_fire: float | None  # scheduled time of the last clock fire handled (fired or skipped)
    has_secret: bool


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire of a task: its trigger and what came of it."""

    id: int
    task_id: int
    trigger: Trigger
    queued: bool
    run_id: str | None
    error: str | None


def _private_file(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            p.chmod(0o600)


class TaskStore:
    """The tasks of one bastion home (thread-safe; one connection, serialised)."""

    def __init__(self, home: Path) -> None:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = home / "tasks.db"
        self._key = load_pepper(home / "tasks.key")
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0,
                                   isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        # Safe against a crash or SIGKILL of bastion (WAL); only a power cut may lose the last
        # commits. A commit costs no fsync, so a due task is handled in well under 5 ms.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(_SCHEMA)
        _private_file(self.path)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # ---- plumbing ---------------------------------------------------------------------------
    def _write(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """Run one write and bump the generation, in one transaction (caller holds the lock)."""
        if self._db.in_transaction:  # inside transaction(): its COMMIT covers this too
            cur = self._db.execute(sql, args)
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            return cur
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute(sql, args)
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return cur

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group the writes of the body into one transaction (a tick's many fires: one commit)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def generation(self) -> int:
        """Return a counter that changes whenever a task is added, changed or removed."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    @staticmethod
    def _row(row: tuple[object, ...]) -> StoredTask:
        id_, spec, created, updated, last, salt = row
        return StoredTask(int(str(id_)), TaskSpec.from_dict(json.loads(str(spec))),
                          float(str(created)), float(str(updated)),
                          None if last is None else float(str(last)), salt is not None)

    _COLS = "id, spec, created_at, updated_at, last_fire, salt"

    # ---- tasks ------------------------------------------------------------------------------
    def add(self, spec: TaskSpec, *, now: float | None = None) -> tuple[StoredTask, str | None]:
        """Store a new task; return it and, for a webhook task, its secret (shown once)."""
        now = time.time() if now is None else now
        salt = secrets.token_hex(16) if spec.schedule.kind == "webhook" else None
        with self._lock:
            try:
                cur = self._write(
                    "INSERT INTO tasks (owner, name, spec, salt, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (spec.owner, spec.name, json.dumps(spec.to_dict()), salt, now, now))
            except sqlite3.IntegrityError as exc:
                raise ConfigError(f"{spec.owner} already has a task named {spec.name!r}",
                                  fix="choose another name, or remove it first: "
                                      f"bastion task rm {spec.name}") from exc
        task = StoredTask(int(cur.lastrowid or 0), spec, now, now, None, salt is not None)
        return task, None if salt is None else self._secret(spec.owner, spec.name, salt)

    def get(self, owner: str, name: str) -> StoredTask:
        """Return ``owner``'s task ``name`` (another owner's is "no such task", never a hint)."""
        with self._lock:
            row = self._db.execute(f"SELECT {self._COLS} FROM tasks WHERE owner = ? AND name = ?",
                                   (owner, name)).fetchone()
        if row is None:
            raise NotFoundError(f"no task named {name!r}", fix="bastion task list")
        return self._row(row)

    def by_id(self, task_id: int) -> StoredTask | None:
        """Return the task with this id, or ``None`` when it is gone."""
        with self._lock:
            row = self._db.execute(f"SELECT {self._COLS} FROM tasks WHERE id = ?",
                                   (task_id,)).fetchone()
        return None if row is None else self._row(row)

    def list_tasks(self, owner: str | None = None) -> list[StoredTask]:
        """Return ``owner``'s tasks by name (``None``: everyone's, by owner then name)."""
        sql = f"SELECT {self._COLS} FROM tasks"
        args: tuple[object, ...] = ()
        if owner is not None:
            sql, args = sql + " WHERE owner = ?", (owner,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY owner, name", args).fetchall()
        return [self._row(r) for r in rows]

    def iter_all(self) -> Iterator[StoredTask]:
        """Yield every task (the scheduler's reload)."""
        yield from self.list_tasks(None)

    def set_paused(self, owner: str, name: str, paused: bool, *,
                   now: float | None = None) -> StoredTask:
        """Pause or resume a task; resuming does not run what fell due while paused."""
        task = self.get(owner, name)
        spec = TaskSpec.from_dict({**task.spec.to_dict(), "paused": paused})
        now = time.time() if now is None else now
        # While paused nothing is due: resuming starts the clock from now (no catch-up burst).
        last = now if not paused else task.last_fire
        with self._lock:
            self._write("UPDATE tasks SET spec = ?, updated_at = ?, last_fire = ? WHERE id = ?",
                        (json.dumps(spec.to_dict()), now, last, task.id))
        return StoredTask(task.id, spec, task.created_at, now, last, task.has_secret)

    def remove(self, owner: str, name: str) -> None:
        """Delete a task with its fires and nonces."""
        task = self.get(owner, name)
        with self._lock:
            self._write("DELETE FROM tasks WHERE id = ?", (task.id,))

    def mark_fired(self, task_id: int, scheduled: float) -> None:
        """Record that the clock fire due at ``scheduled`` was handled (no generation bump)."""
        with self._lock:
            self._db.execute("UPDATE tasks SET last_fire = ? WHERE id = ?", (scheduled, task_id))

    # ---- fires ------------------------------------------------------------------------------
    def queue_fire(self, task_id: int, trigger: Trigger) -> int:
        """Queue a fire for the scheduler to start (``bastion task run-now``); return its id."""
        with self._lock:
            cur = self._write(
                "INSERT INTO fires (task_id, kind, fired_at, detail, payload, queued) "
                "VALUES (?, ?, ?, ?, ?, 1)",
                (task_id, trigger.kind, trigger.fired_at, trigger.detail, trigger.payload))
        return int(cur.lastrowid or 0)

    def queued(self) -> list[Fire]:
        """Return the fires waiting for the scheduler, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, task_id, kind, fired_at, detail, payload, queued, run_id, error "
                "FROM fires WHERE queued = 1 ORDER BY id").fetchall()
        return [self._fire(r) for r in rows]

    @staticmethod
    def _fire(r: tuple[object, ...]) -> Fire:
        trig = Trigger(str(r[2]), float(str(r[3])), str(r[4]), str(r[5]))  # type: ignore[arg-type]
        return Fire(int(str(r[0])), int(str(r[1])), trig, bool(r[6]),
                    None if r[7] is None else str(r[7]), None if r[8] is None else str(r[8]))

    def record_fire(self, task_id: int, trigger: Trigger, *, run_id: str | None,
                    error: str | None, fire_id: int | None = None) -> int:
        """Record what came of a fire: the run id, or why no run started."""
        now = time.time()
        with self._lock:
            if fire_id is not None:
                self._db.execute("UPDATE fires SET queued = 0, run_id = ?, error = ?, "
                                 "done_at = ? WHERE id = ?", (run_id, error, now, fire_id))
                return fire_id
            cur = self._db.execute(
                "INSERT INTO fires (task_id, kind, fired_at, detail, payload, run_id, error, "
                "done_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (task_id, trigger.kind, trigger.fired_at, trigger.detail, trigger.payload,
                 run_id, error, now))
            self._db.execute("DELETE FROM fires WHERE task_id = ? AND id <= ? - 200 "
                             "AND queued = 0", (task_id, cur.lastrowid))
        return int(cur.lastrowid or 0)

    def fire(self, fire_id: int) -> Fire | None:
        """Return one fire (the CLI waits on a queued one for its run id)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, task_id, kind, fired_at, detail, payload, queued, run_id, error "
                "FROM fires WHERE id = ?", (fire_id,)).fetchone()
        return None if row is None else self._fire(row)

    def fires(self, task_id: int, limit: int = 20) -> list[Fire]:
        """Return a task's latest fires, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, task_id, kind, fired_at, detail, payload, queued, run_id, error "
                "FROM fires WHERE task_id = ? ORDER BY id DESC LIMIT ?",
                (task_id, limit)).fetchall()
        return [self._fire(r) for r in rows]

    # ---- webhook secrets and nonces ----------------------------------------------------------
    def _secret(self, owner: str, name: str, salt: str) -> str:
        mac = hmac.new(self._key, f"{owner}/{name}/{salt}".encode(), hashlib.sha256).digest()
        return "whsec_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def secret(self, task: StoredTask) -> str | None:
        """Return the task's webhook secret (``None`` for a task without one)."""
        with self._lock:
            row = self._db.execute("SELECT salt FROM tasks WHERE id = ?", (task.id,)).fetchone()
        if row is None or row[0] is None:
            return None
        return self._secret(task.spec.owner, task.spec.name, str(row[0]))

    def rotate_secret(self, owner: str, name: str) -> str:
        """Draw a new secret for a webhook task (the old one stops working); return it."""
        task = self.get(owner, name)
        if task.spec.schedule.kind != "webhook":
            raise ConfigError(f"task {name!r} is not a webhook task",
                              fix="only tasks added with --webhook have a secret")
        salt = secrets.token_hex(16)
        with self._lock:
            self._write("UPDATE tasks SET salt = ? WHERE id = ?", (salt, task.id))
        return self._secret(owner, name, salt)

    def use_nonce(self, task_id: int, nonce: str, now: float, window_s: float) -> bool:
        """Record ``nonce`` for the task; False when it was already used (a replay).

        Nonces older than twice the timestamp window are pruned: a trigger that old is
        refused by its timestamp before its nonce is looked at.
        """
        with self._lock:
            self._db.execute("DELETE FROM nonces WHERE seen_at < ?", (now - 2 * window_s,))
            try:
                self._db.execute("INSERT INTO nonces (task_id, nonce, seen_at) VALUES (?, ?, ?)",
                                 (task_id, nonce, now))
            except sqlite3.IntegrityError:
                return False
        return True


def open_store(home: Path | None = None) -> TaskStore:
    """Open the task store of ``home`` (default: bastion's home)."""
    if home is None:
        from bastion.config import paths

        home = paths.ensure_home()
    return TaskStore(home)

"""Sessions, messages and the document registry in one SQLite file.

Durability: WAL journal with ``synchronous=FULL``; every append is its own committed
transaction, so a message is on disk when :meth:`SessionStore.append` returns.
One-writer discipline: within a process one connection guarded by a lock serialises all
statements; across processes every write starts with ``BEGIN IMMEDIATE`` (the write lock
is taken up front, never upgraded mid-transaction) and waits up to ``busy_timeout``.
Schema changes are numbered migrations tracked in ``PRAGMA user_version`` (append one to
:data:`MIGRATIONS`; they run with foreign keys off, so a migration may rebuild a table).

Owners: a session's name is unique per owner, never across owners, so what one user names
a session tells them nothing about another's. Lookups by name or id are limited to the
caller's own (:func:`bastion.security.identity.owner_filter`); the unscoped caller (the local
CLI, an admin's ``all_users``) resolves a key as an id first, then as a name of its own
owner's, then as a name only one owner has (two owners with that name: an error asking for
the id).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import MemoryStoreError, NotFoundError
from bastion.messages import Message, ToolCall
from bastion.security.identity import owner_filter, owner_name

# Each entry upgrades the schema by one version; never edit a released entry, append one.
MIGRATIONS: list[str] = [
    # 1: sessions and messages
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        tool_calls TEXT,
        tool_call_id TEXT,
        name TEXT,
        created_at REAL NOT NULL,
        UNIQUE (session_id, seq)
    );
    """,
    # 2: semantic-index bookkeeping (messages not yet embedded are caught up later)
    """
    ALTER TABLE messages ADD COLUMN indexed INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_pending ON messages(indexed) WHERE indexed = 0;
    """,
    # 3: ingested documents
    """
    CREATE TABLE documents (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL UNIQUE,
        sha256 TEXT NOT NULL,
        kind TEXT NOT NULL,
        chunks INTEGER NOT NULL,
        size INTEGER NOT NULL,
        ingested_at REAL NOT NULL
    );
    """,
    # 4: owners (users of one server see only their own sessions and documents); a
    # document's source is unique per owner, so the table is rebuilt without the old UNIQUE
    """
    ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT 'admin';
    CREATE INDEX sessions_owner ON sessions(owner);
    CREATE TABLE documents_v4 (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL DEFAULT 'admin',
        source TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        kind TEXT NOT NULL,
        chunks INTEGER NOT NULL,
        size INTEGER NOT NULL,
        ingested_at REAL NOT NULL,
        UNIQUE (owner, source)
    );
    INSERT INTO documents_v4 (id, source, sha256, kind, chunks, size, ingested_at)
        SELECT id, source, sha256, kind, chunks, size, ingested_at FROM documents;
    DROP TABLE documents;
    ALTER TABLE documents_v4 RENAME TO documents;
    """,
    # 5: a session's name is unique per owner (was: across all owners, so choosing a name
    # another user had answered "exists"). Rebuilt with foreign keys off: messages keep
    # their session_id (ids stay unique), none is deleted by the DROP.
    """
    CREATE TABLE sessions_v5 (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL DEFAULT 'admin',
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (owner, name)
    );
    INSERT INTO sessions_v5 (id, owner, name, created_at, updated_at)
        SELECT id, owner, name, created_at, updated_at FROM sessions;
    DROP INDEX IF EXISTS sessions_owner;
    DROP TABLE sessions;
    ALTER TABLE sessions_v5 RENAME TO sessions;
    CREATE INDEX sessions_name ON sessions(name);
    """,
    # 6: a tool message's step as a client showed it (risk, sandbox, decision, approval),
    # beside the message and keyed by its id; it goes with its message
    """
    CREATE TABLE message_steps (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        step TEXT NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
_WITH_STEP = ("SELECT m.*, s.step AS step FROM messages m "
              "LEFT JOIN message_steps s ON s.message_id = m.id ")
_GENERATED = re.compile(r"[0-9a-f]{12}")
NO_SESSION = "\0no-session"
"""What :meth:`SessionStore.record_keys` answers for a session the caller does not have: a
key no record carries (never an empty filter, which would match everything)."""


class SessionNotFound(NotFoundError, MemoryStoreError):
    """No such session (the API answers 404; ``except MemoryStoreError`` still catches it)."""


class SessionAmbiguous(MemoryStoreError):
    """An unscoped caller named a session by a name several owners use."""


@dataclass(slots=True, frozen=True)
class SessionInfo:
    """One stored session."""

    id: str
    name: str
    created_at: float
    updated_at: float
    messages: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "messages": self.messages,
        }


@dataclass(slots=True, frozen=True)
class StoredMessage:
    """A message as stored, with its row id and position."""

    id: int
    session_id: str
    seq: int
    message: Message
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (OpenAI wire form plus bookkeeping)."""
        return {"id": self.id, "seq": self.seq, "created_at": self.created_at,
                **self.message.to_openai()}


@dataclass(slots=True, frozen=True)
class DocumentInfo:
    """One ingested document."""

    id: str
    source: str
    sha256: str
    kind: str
    chunks: int
    size: int
    ingested_at: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "id": self.id,
            "source": self.source,
            "sha256": self.sha256,
            "kind": self.kind,
            "chunks": self.chunks,
            "size": self.size,
            "ingested_at": self.ingested_at,
        }


def _encode_calls(calls: Sequence[ToolCall]) -> str | None:
    if not calls:
        return None
    return json.dumps([{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls])


def _decode_calls(raw: str | None) -> list[ToolCall]:
    if not raw:
        return []
    return [ToolCall(c["name"], c["arguments"], id=c["id"]) for c in json.loads(raw)]


def _mine(alias: str = "") -> tuple[str, tuple[str, ...]]:
    """Return the SQL condition (and its argument) limiting rows to the caller's own."""
    owner = owner_filter()
    if owner is None:
        return "", ()
    return f" AND {alias}owner = ?", (owner,)


def _row_message(row: sqlite3.Row) -> StoredMessage:
    step = row["step"] if "step" in row.keys() else None  # noqa: SIM118 - a Row, not a dict
    msg = Message(
        row["role"],
        row["content"],
        tool_calls=_decode_calls(row["tool_calls"]),
        tool_call_id=row["tool_call_id"],
        name=row["name"],
        step=json.loads(step) if step else None,
    )
    return StoredMessage(row["id"], row["session_id"], row["seq"], msg, row["created_at"])


class SessionStore:
    """The SQLite store; thread-safe, safe to open from several processes."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise MemoryStoreError(
                f"cannot open the conversation store {self.path}: {exc}",
                fix="check the path and its permissions, or set memory.enabled: false",
            ) from exc

    # -- plumbing --------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise MemoryStoreError(f"conversation store is busy: {exc}") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, args))

    def _migrate(self) -> None:
        # foreign keys off while migrating (it cannot change inside a transaction): a
        # rebuilt table's DROP would otherwise cascade to the rows that reference it
        self._db.execute("PRAGMA foreign_keys=OFF")
        try:
            with self._write() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise MemoryStoreError(
                        f"{self.path} has schema v{version}, newer than this bastion "
                        f"(v{SCHEMA_VERSION})",
                        fix="upgrade bastion",
                    )
                for number in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[number].split(";"):
                        if statement.strip():
                            db.execute(statement)
                if version != SCHEMA_VERSION:
                    broken = db.execute("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise MemoryStoreError(
                            f"upgrading {self.path} to schema v{SCHEMA_VERSION} left "
                            f"{len(broken)} rows without their session; nothing was changed",
                            fix="restore the file from a backup or report this")
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")

    def schema_version(self) -> int:
        """Return the schema version of the open file."""
        return int(self._query("PRAGMA user_version")[0][0])

    def journal_mode(self) -> str:
        """Return SQLite's journal mode (``wal``)."""
        return str(self._query("PRAGMA journal_mode")[0][0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # -- sessions --------------------------------------------------------------------
    def _find(self, db: sqlite3.Connection, key: str) -> sqlite3.Row | None:
        """Return the row of the caller's session named ``key`` (or with id ``key``).

        Scoped callers (an API key) see only their own sessions. The unscoped caller (the
        local CLI, an admin's ``all_users``): an id first, then a name of its own owner's,
        then a name only one owner has; a name two owners have raises
        :class:`SessionAmbiguous` (name it by its id).
        """
        who = owner_filter()
        if who is not None:
            return db.execute(  # type: ignore[no-any-return]
                "SELECT * FROM sessions WHERE owner = ? AND (name = ? OR id = ?) "
                "ORDER BY (name = ?) DESC LIMIT 1", (who, key, key, key)).fetchone()
        row = db.execute("SELECT * FROM sessions WHERE id = ?", (key,)).fetchone()
        if row is None:
            row = db.execute("SELECT * FROM sessions WHERE owner = ? AND name = ?",
                             (owner_name(), key)).fetchone()
        if row is not None:
            return row  # type: ignore[no-any-return]
        rows = db.execute("SELECT * FROM sessions WHERE name = ? ORDER BY owner LIMIT 3",
                          (key,)).fetchall()
        if len(rows) > 1:
            raise SessionAmbiguous(
                f"several users have a session named '{key}'",
                fix="name it by its id: bastion sessions list (or GET /v1/sessions?all_users=true)")
        return rows[0] if rows else None

    def _info(self, row: sqlite3.Row) -> SessionInfo:
        n = self._db.execute("SELECT COUNT(*) FROM messages WHERE session_id = ?",
                             (row["id"],)).fetchone()[0]
        return SessionInfo(row["id"], row["name"], row["created_at"], row["updated_at"], n)

    def resolve(self, key: str) -> SessionInfo | None:
        """Return the caller's session whose name (first) or id is ``key``."""
        with self._lock:
            row = self._find(self._db, key)
            return None if row is None else self._info(row)

    def session_id(self, key: str) -> str | None:
        """Return the id of the caller's session whose name (first) or id is ``key``."""
        with self._lock:
            row = self._find(self._db, key)
        return None if row is None else str(row["id"])

    def owner_of(self, session_id: str) -> str | None:
        """Return the owner of the session stored under ``session_id``, whoever asks.

        By id only (ids are unique; names are unique only per owner): who may approve a
        pending call of that session (``None``: no such session).
        """
        rows = self._query("SELECT owner FROM sessions WHERE id = ?", (session_id,))
        return str(rows[0][0]) if rows else None

    def ensure(self, key: str) -> str:
        """Return the id of session ``key`` (a name or an id), creating the session if new."""
        try:
            with self._write() as db:
                return self._ensure(db, key)
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"cannot create session '{key}': {exc}",
                                   fix="check the disk and the memory directory") from exc

    def record_keys(self, key: str) -> tuple[str, ...]:
        """Return what the audit, approval and undo records of session ``key`` carry.

        Its stored id, and ``key`` itself when it is the session's name and no other owner
        has a session by that name: records written before sessions were audited by id
        carry the name the session had then. A session the caller does not have:
        (:data:`NO_SESSION`,), which no record carries.
        """
        with self._lock:
            row = self._find(self._db, key)
            if row is None:
                return (key,) if owner_filter() is None else (NO_SESSION,)
            sid = str(row["id"])
            if key == sid:
                return (sid,)
            others = self._db.execute(
                "SELECT 1 FROM sessions WHERE name = ? AND owner != ? LIMIT 1",
                (key, row["owner"])).fetchone()
        return (sid,) if others else (sid, key)

    def require(self, key: str) -> SessionInfo:
        """Return the session ``key`` or raise a one-line error."""
        info = self.resolve(key)
        if info is None:
            raise SessionNotFound(
                f"no session named '{key}'", fix="list them with: bastion sessions list"
            )
        return info

    def _ensure(self, db: sqlite3.Connection, key: str) -> str:
        row = self._find(db, key)
        if row is not None:
            return str(row["id"])
        # a generated key (Agent.new_session_id) doubles as the id; a chosen name gets a new
        # one. Names are unique per owner: another owner's name or id is no obstacle here.
        taken = db.execute("SELECT 1 FROM sessions WHERE id = ?", (key,)).fetchone()
        sid = key if _GENERATED.fullmatch(key) and not taken else uuid.uuid4().hex[:12]
        now = time.time()
        db.execute(
            "INSERT INTO sessions(id, name, created_at, updated_at, owner) VALUES (?, ?, ?, ?, ?)",
            (sid, key, now, now, owner_name()),
        )
        return sid

    def sessions(self) -> list[SessionInfo]:
        """Return all sessions (the caller's own), most recently used first."""
        cond, arg = _mine("s.")
        rows = self._query(
            "SELECT s.*, (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id) AS n "
            f"FROM sessions s WHERE 1{cond} ORDER BY s.updated_at DESC", arg
        )
        return [SessionInfo(r["id"], r["name"], r["created_at"], r["updated_at"], r["n"])
                for r in rows]

    def rename(self, key: str, new_name: str) -> SessionInfo:
        """Rename a session (names are unique among one owner's sessions)."""
        new_name = new_name.strip()
        if not new_name:
            raise MemoryStoreError("a session name cannot be empty")
        info = self.require(key)
        with self._write() as db:
            clash = db.execute(  # only the same owner's names and ids: nobody else's
                "SELECT id FROM sessions WHERE owner = (SELECT owner FROM sessions WHERE id = ?) "
                "AND (name = ? OR id = ?) AND id != ?",
                (info.id, new_name, new_name, info.id),
            ).fetchone()
            if clash:
                raise MemoryStoreError(
                    f"a session named '{new_name}' already exists", fix="pick another name"
                )
            db.execute("UPDATE sessions SET name = ? WHERE id = ?", (new_name, info.id))
        return self.require(info.id)

    def delete(self, key: str) -> SessionInfo:
        """Delete a session and its messages; return what was deleted."""
        info = self.require(key)
        with self._write() as db:
            db.execute("DELETE FROM messages WHERE session_id = ?", (info.id,))
            db.execute("DELETE FROM sessions WHERE id = ?", (info.id,))
        return info

    # -- messages --------------------------------------------------------------------
    def append(self, key: str, message: Message) -> StoredMessage:
        """Store ``message`` in session ``key`` (created on first use); durable on return."""
        now = time.time()
        try:
            with self._write() as db:
                sid = self._ensure(db, key)
                seq = db.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?", (sid,)
                ).fetchone()[0]
                cur = db.execute(
                    "INSERT INTO messages(session_id, seq, role, content, tool_calls, "
                    "tool_call_id, name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (sid, seq, message.role, message.content, _encode_calls(message.tool_calls),
                     message.tool_call_id, message.name, now),
                )
                db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, sid))
                row_id = int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise MemoryStoreError(
                f"could not save the message: {exc}", fix=f"check disk space and {self.path}"
            ) from exc
        return StoredMessage(row_id, sid, seq, message, now)

    def messages(self, key: str, *, limit: int | None = None) -> list[StoredMessage]:
        """Return the session's messages oldest first (the newest ``limit`` if given)."""
        sid = self.session_id(key)
        if sid is None:
            return []
        if limit is None:
            rows = self._query("SELECT * FROM messages WHERE session_id = ? ORDER BY seq", (sid,))
        else:
            rows = self._query(
                "SELECT * FROM (SELECT * FROM messages WHERE session_id = ? ORDER BY seq DESC "
                "LIMIT ?) ORDER BY seq",
                (sid, limit),
            )
        return [_row_message(r) for r in rows]

    def page(
        self, key: str, *, offset: int = 0, limit: int = 100
    ) -> tuple[int, list[StoredMessage]]:
        """Return (total, one page of the whole session from ``offset``), oldest first."""
        sid = self.session_id(key)
        if sid is None:
            return 0, []
        total = self._query("SELECT COUNT(*) AS n FROM messages WHERE session_id = ?", (sid,))
        rows = self._query(
            _WITH_STEP + "WHERE m.session_id = ? ORDER BY m.seq LIMIT ? OFFSET ?",
            (sid, limit, offset),
        )
        return int(total[0]["n"]), [_row_message(r) for r in rows]

    def record_steps(self, key: str, steps: dict[str, dict[str, Any]]) -> int:
        """Keep each tool step's facts with its tool message; return how many were kept.

        ``steps`` maps a tool call's id to what a client showed of its step (risk, sandbox,
        decision, approval); the newest tool message of session ``key`` answering that call
        gets it. A call without a stored tool message (the turn stopped first) is skipped.
        """
        sid = self.session_id(key)
        if sid is None or not steps:
            return 0
        kept = 0
        try:
            with self._write() as db:
                for call_id, step in steps.items():
                    row = db.execute(
                        "SELECT id FROM messages WHERE session_id = ? AND role = 'tool' "
                        "AND tool_call_id = ? ORDER BY seq DESC LIMIT 1", (sid, call_id),
                    ).fetchone()
                    if row is not None:
                        db.execute("INSERT OR REPLACE INTO message_steps(message_id, step) "
                                   "VALUES (?, ?)", (row[0], json.dumps(step)))
                        kept += 1
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"could not save the tool steps: {exc}",
                                   fix=f"check disk space and {self.path}") from exc
        return kept

    def tail(self, key: str, *, min_chars: int, limit: int) -> list[StoredMessage]:
        """Return the newest messages holding at least ``min_chars`` characters, oldest first.

        At most ``limit`` messages: enough to fill a context window without reading a long
        session whole. Sizes are read newest-first and reading stops once there is enough;
        then only the needed rows are loaded.
        """
        sid = self.session_id(key)
        if sid is None:
            return []
        with self._lock:
            cut = None
            total = 0
            # rows stream newest first; stop reading as soon as there is enough
            for seq, n in self._db.execute(
                "SELECT seq, length(content) + COALESCE(length(tool_calls), 0) FROM messages "
                "WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
                (sid, limit),
            ):
                cut = seq
                total += n + 16  # per-message framing
                if total >= min_chars:
                    break
        if cut is None:
            return []
        rows = self._query(
            "SELECT * FROM messages WHERE session_id = ? AND seq >= ? ORDER BY seq", (sid, cut)
        )
        return [_row_message(r) for r in rows]

    def get_messages(self, ids: Sequence[int]) -> dict[int, StoredMessage]:
        """Return stored messages by row id."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT * FROM messages WHERE id IN ({marks})", list(ids))
        return {r["id"]: _row_message(r) for r in rows}

    def session_names(self, ids: Sequence[str]) -> dict[str, str]:
        """Map session ids to names (only the caller's own sessions)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        cond, arg = _mine()
        rows = self._query(f"SELECT id, name FROM sessions WHERE id IN ({marks}){cond}",
                           [*ids, *arg])
        return {r["id"]: r["name"] for r in rows}

    def session_owners(self, ids: Sequence[str]) -> dict[str, str]:
        """Map session ids to their owners (whoever asks: the semantic index's bookkeeping)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT id, owner FROM sessions WHERE id IN ({marks})", list(ids))
        return {r["id"]: r["owner"] for r in rows}

    def document_owners(self, ids: Sequence[str]) -> dict[str, str]:
        """Map document ids to their owners (whoever asks)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT id, owner FROM documents WHERE id IN ({marks})", list(ids))
        return {str(r[0]): str(r[1]) for r in rows}

    def pending(self, limit: int = 256) -> list[StoredMessage]:
        """Return messages not yet in the semantic index, oldest first."""
        rows = self._query(
            "SELECT * FROM messages WHERE indexed = 0 ORDER BY id LIMIT ?", (limit,)
        )
        return [_row_message(r) for r in rows]

    def mark_indexed(self, ids: Sequence[int]) -> None:
        """Record that these messages are in the semantic index."""
        if not ids:
            return
        with self._write() as db:
            db.executemany("UPDATE messages SET indexed = 1 WHERE id = ?", [(i,) for i in ids])

    # -- documents -------------------------------------------------------------------
    def document(self, source: str) -> DocumentInfo | None:
        """Return the registry entry of ``source`` (a path or name), or an id match."""
        cond, arg = _mine()
        rows = self._query(
            "SELECT id, source, sha256, kind, chunks, size, ingested_at FROM documents "
            f"WHERE (source = ? OR id = ?){cond} ORDER BY (source = ?) DESC LIMIT 1",
            (source, source, *arg, source),
        )
        return DocumentInfo(**dict(rows[0])) if rows else None

    def visible_documents(self, ids: Sequence[str]) -> set[str]:
        """Return which of these document ids the caller may see."""
        if not ids:
            return set()
        cond, arg = _mine()
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT id FROM documents WHERE id IN ({marks}){cond}",
                           [*ids, *arg])
        return {str(r[0]) for r in rows}

    def documents(self) -> list[DocumentInfo]:
        """Return every ingested document, newest first."""
        cond, arg = _mine()
        rows = self._query(
            "SELECT id, source, sha256, kind, chunks, size, ingested_at FROM documents "
            f"WHERE 1{cond} ORDER BY ingested_at DESC", arg)
        return [DocumentInfo(**dict(r)) for r in rows]

    def put_document(self, doc: DocumentInfo) -> None:
        """Insert or replace a registry entry."""
        owner = owner_name()
        with self._write() as db:
            db.execute("DELETE FROM documents WHERE source = ? AND owner = ?", (doc.source, owner))
            db.execute(
                "INSERT INTO documents(id, source, sha256, kind, chunks, size, ingested_at, "
                "owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (doc.id, doc.source, doc.sha256, doc.kind, doc.chunks, doc.size, doc.ingested_at,
                 owner),
            )

    def remove_document(self, source: str) -> DocumentInfo | None:
        """Remove a registry entry; return it (None if unknown)."""
        doc = self.document(source)
        if doc is not None:
            with self._write() as db:
                db.execute("DELETE FROM documents WHERE id = ?", (doc.id,))
        return doc

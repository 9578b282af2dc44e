"""The audit log: a hash-chained, append-only SQLite record of everything the gateway decides.

Every record covers its predecessor (``hash = SHA-256(prev_hash, canonical row)``), so an
edit, deletion, reordering or truncation is detectable. The *head* -- the last record's id and
hash, signed -- is written in the same transaction as the records it covers, so it always
covers the last record, even after a killed process: a missing head, a head behind the log
(records appended without the key) or ahead of it (records cut) is a failure. Before each
write the writer checks that the stored head still matches the tail; if not, it records an
``audit.head_mismatch`` (which ``verify`` reports) instead of signing over what it did not
write. Signed checkpoints (every ``checkpoint_every`` records) narrow down where a rewrite
starts. Retention deletes old records behind a signed *anchor*, so what remains verifies.

Which keys ``verify`` trusts is pinned outside the audit directory (fingerprints in the config,
written by ``bastion init``, or ``--fingerprint``); the ``*-signing.pub`` file beside the
log is only the unpinned fallback, reported as such. Heads can also be copied to an external
anchor (:mod:`bastion.security._audit_anchor`), which makes a rollback detectable.

Writes go through one batched writer thread: :meth:`AuditLog.record` redacts and queues the
record and returns at once; the writer assigns ids and hashes inside a ``BEGIN IMMEDIATE``
transaction (several processes may share one database) and commits a batch at a time. The
durability policy says when a record counts as acknowledged:

- ``queued``: when queued (fastest; a crash can lose the last ``flush_interval_ms``);
- ``committed`` (default): the gateway waits until the record's batch is committed to the
  WAL, which survives a killed process;
- ``fsync``: as ``committed`` with ``synchronous=FULL`` (survives power loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bastion.crypto.keys import Signer as SignerT
from bastion.crypto.keys import fingerprint
from bastion.errors import AuditError
from bastion.security import identity
from bastion.security._audit_anchor import HeadAnchor, read_anchor
from bastion.security._audit_chain import (
    COLUMNS,
    GENESIS,
    Signer,
    checkpoint_message,
    record_hash,
    trust_key,
    verify_signature,
)
from bastion.security.gateway import CallRequest, Next, ToolResult
from bastion.security.redact import Redactor

__all__ = ["AuditEvent", "AuditLog", "AuditStage", "Durability", "VerifyReport", "verify"]

Durability = Literal["queued", "committed", "fsync"]
_LOCAL = {"user": "local", "key_id": None}  # the CLI and the server's own work: no API key
SUMMARY_CHARS = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    session_id TEXT,
    tool TEXT,
    decision TEXT,
    risk TEXT,
    arguments TEXT,
    result TEXT,
    duration_ms REAL,
    detail TEXT,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, ts REAL NOT NULL, signature TEXT NOT NULL,
    public_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL,
    ts REAL NOT NULL, signature TEXT NOT NULL, public_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS anchors (
    first_id INTEGER PRIMARY KEY, prev_hash TEXT NOT NULL, ts REAL NOT NULL,
    signature TEXT NOT NULL, public_key TEXT NOT NULL
);
"""
_INSERT = ("INSERT INTO events (id, ts, kind, actor, session_id, tool, decision, risk, arguments,"
           " result, duration_ms, detail, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")


@dataclass(slots=True)
class AuditEvent:
    """One audit record as stored."""

    id: int
    ts: float
    kind: str
    actor: str | None
    session_id: str | None
    tool: str | None
    decision: str | None
    risk: str | None
    arguments: Any
    result: str | None
    duration_ms: float | None
    detail: Any
    hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-ready mapping."""
        return {name: getattr(self, name) for name in (*COLUMNS, "hash")}


@dataclass(slots=True)
class VerifyReport:
    """The outcome of :func:`verify`: ``first_bad`` names the first record that fails."""

    ok: bool
    checked: int = 0
    first_bad: int | None = None
    reason: str = ""
    checkpoints: int = 0
    anchored_at: int | None = None
    last_id: int | None = None
    head_seq: int | None = None
    pinned: bool = False  # the trusted keys came from outside the audit directory
    external_seq: int | None = None  # newest head found in the external anchor

    def summary(self) -> str:
        """Return one line for the CLI."""
        if self.ok:
            anchor = f", anchored at {self.anchored_at}" if self.anchored_at else ""
            head = f", signed head at {self.head_seq}" if self.head_seq else ""
            ext = (f", external anchor checked up to {self.external_seq}"
                   if self.external_seq else "")
            pin = ("" if self.pinned or not self.checked else
                   " -- WARNING: key not pinned (trusted the .pub file beside the log; set "
                   "audit.key_fingerprints or pass --fingerprint)")
            return (f"ok: {self.checked} records, {self.checkpoints} signed checkpoints "
                    f"verified{anchor}{head}{ext}{pin}")
        return f"FAILED at record {self.first_bad}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready mapping."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _Pending:
    receipt: int
    row: tuple[Any, ...]  # COLUMNS without id


@dataclass(slots=True)
class _Waiters:
    threads: dict[int, threading.Event] = field(default_factory=dict)
    futures: dict[int, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[int]]]] = field(
        default_factory=dict)


class AuditLog:
    """Append-only, hash-chained audit records in SQLite (redacted before they are written)."""

    def __init__(
        self,
        path: Path,
        redactor: Redactor | None = None,
        *,
        durability: Durability = "committed",
        flush_interval_ms: float = 5.0,
        batch_size: int = 5000,
        checkpoint_every: int = 10_000,
        key_path: Path | None = None,
        signer: SignerT | None = None,
        trust_signer: bool = False,
        pinned: tuple[str, ...] = (),
        anchor: HeadAnchor | None = None,
        mask_key: bytes | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.redactor = redactor or Redactor()
        self.durability: Durability = durability
        self.flush_interval = flush_interval_ms / 1000
        self.batch_size = batch_size
        self.checkpoint_every = checkpoint_every
        # file key (default) or a PKCS#11 token: every key used is added to the trusted list
        self.signer: SignerT = signer or Signer(
            key_path or self.path.with_name(self.path.stem + "-signing.key"))
        self.pub_path = self.path.with_name(self.path.stem + "-signing.pub")
        added = trust_key(self.pub_path, self.signer.public_hex, add=trust_signer)
        self.pinned = tuple(pinned)  # key fingerprints trusted from outside the audit directory
        self._mask_key = mask_key or mask_key_for(self.signer, self.path)
        self.anchor = anchor
        self._head: tuple[int, str, str] | None = None  # the last head this handle signed/checked
        self._db = _connect(self.path, durability)
        self._db.executescript(_SCHEMA)
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()  # the writer thread and prune() share self._db
        self._reader = _connect(self.path, durability)
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._receipt = 0
        self._durable = 0  # every receipt <= this is committed (or failed)
        self._urgent = False
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self._ids: dict[int, int] = {}
        self._waiters = _Waiters()
        self._writer = threading.Thread(target=self._run, name="bastion-audit-writer", daemon=True)
        self._writer.start()
        if added:
            self.record("audit.key_trusted", actor="system", decision="added",
                        detail={"public_key": self.signer.public_hex,
                                "algorithm": self.signer.algorithm})

    # ---- writing ---------------------------------------------------------------------------
    def record(
        self,
        kind: str,
        *,
        actor: str | None = None,
        session_id: str | None = None,
        tool: str | None = None,
        decision: str | None = None,
        risk: str | None = None,
        arguments: Any = None,
        result: str | None = None,
        duration_ms: float | None = None,
        detail: Any = None,
    ) -> int:
        """Redact and queue one record; return its receipt (see :meth:`wait`, :meth:`durable`).

        The record is chained and committed by the writer thread shortly after; readers in
        this process see it (``events`` flushes first).
        """
        r = self.redactor
        principal = identity.current()  # who asked, through which key: every record says
        who = {"principal": principal.audit_fields() if principal is not None else _LOCAL}
        detail = who if detail is None else (
            {**detail, **who} if isinstance(detail, dict) else {"value": detail, **who})
        row = (
            time.time(), str(kind), _s(actor), _s(session_id), _s(tool), _s(decision), _s(risk),
            # arguments exactly as they ran: only secrets bastion holds are masked, each by a
            # keyed tag that forensics can match (an attacker's random-looking payload stays)
            _dumps(r.held_data(arguments, self.secret_tag)) if arguments is not None else None,
            r.text(str(result))[:SUMMARY_CHARS] if result is not None else None,
            float(duration_ms) if duration_ms is not None else None,  # REAL column: hash as stored
            _dumps(r.data(detail)) if detail is not None else None,
        )
        with self._cond:
            if self._closing:
                raise AuditError("the audit log is closed", fix="record before App.aclose()")
            self._receipt += 1
            receipt = self._receipt
            self._queue.append(_Pending(receipt, row))
            if len(self._queue) >= self.batch_size or len(self._queue) == 1:
                self._cond.notify()
        return receipt

    def secret_tag(self, value: str) -> str:
        """Return what stands for the held secret ``value`` in stored arguments.

        ``[REDACTED:<tag>]``, the tag a keyed hash (HMAC-SHA256 under a key derived from the
        signing key), so whoever holds the key can tell which secret was there, and a reader
        of the log alone cannot test guesses.
        """
        return tag_text(self._mask_key, value)

    def wait(self, receipt: int, timeout: float | None = 30.0) -> int:
        """Block until the record with ``receipt`` is committed; return its id."""
        with self._cond:
            if receipt > self._durable:
                ev = self._waiters.threads.setdefault(receipt, threading.Event())
                self._urgent = True
                self._cond.notify()
            else:
                ev = None
        if ev is not None and not ev.wait(timeout):
            raise AuditError("the audit writer did not commit in time", fix="check disk space")
        return self._result(receipt)

    async def durable(self, receipt: int) -> int:
        """Wait (without blocking the event loop) until ``receipt`` is committed; return its id."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if receipt <= self._durable:
                fut = None
            else:
                fut = loop.create_future()
                self._waiters.futures.setdefault(receipt, []).append((loop, fut))
                self._urgent = True
                self._cond.notify()
        if fut is not None:
            await fut
        return self._result(receipt)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until everything queued so far is committed."""
        with self._cond:
            last = self._receipt
        if last:
            self.wait(last, timeout)

    def _result(self, receipt: int) -> int:
        if self._error is not None:
            raise AuditError(f"audit write failed: {self._error}", fix="check disk space")
        return self._ids.pop(receipt, 0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue and self._closing:
                    return
                if not (self._urgent or self._closing) and len(self._queue) < self.batch_size:
                    self._cond.wait(self.flush_interval)  # gather a batch
                batch, self._queue = self._queue, []
                self._urgent = False
                wanted = {p.receipt for p in batch if p.receipt in self._waiters.threads
                          or p.receipt in self._waiters.futures}
            head = None
            try:
                with self._write_lock:
                    ids, head = self._write(batch, wanted)
            except BaseException as exc:  # keep the thread alive; waiters get the error
                self._error = exc
                ids = {}
            # the signed head was committed with the records: nothing is left to do before
            # the callers go on; the external anchor gets its copy afterwards
            self._release(batch[-1].receipt, ids)
            if head is not None and self.anchor is not None:
                self.anchor.publish(dict(zip(("seq", "hash", "ts", "signature", "public_key"),
                                             head, strict=True)))

    def _write(
        self, batch: list[_Pending], wanted: set[int]
    ) -> tuple[dict[int, int], tuple[Any, ...]]:
        db = self._db
        for attempt in range(50):
            try:
                db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)
        try:
            last_id, prev = _tail(db)
            rows = []
            ids: dict[int, int] = {}
            checkpoints = []
            issue = self._head_issue(db, last_id, prev)
            pending: list[tuple[int | None, tuple[Any, ...]]] = [(p.receipt, p.row)
                                                                 for p in batch]
            if issue is not None:  # say so in the chain itself, never sign over it silently
                pending.insert(0, (None, (time.time(), "audit.head_mismatch", "system", None,
                                          None, "tampered", "critical", None, None, None,
                                          _dumps(issue))))
            for receipt, row in pending:
                last_id += 1
                full = (last_id, *row)
                prev = record_hash(prev, full)
                rows.append((*full, prev))
                if receipt in wanted:
                    ids[receipt] = last_id
                if self.checkpoint_every and last_id % self.checkpoint_every == 0:
                    checkpoints.append(self._signed(last_id, prev, "checkpoint"))
            db.executemany(_INSERT, rows)
            if checkpoints:
                db.executemany("INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?)", checkpoints)
            # the head is signed and stored in the same transaction as the records it covers
            head = self._signed(last_id, prev, "head")
            db.execute("INSERT OR REPLACE INTO head VALUES (1,?,?,?,?,?)", head)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._head = (last_id, prev, head[3])
        return ids, head

    def _signed(self, seq: int, digest: str, kind: str) -> tuple[Any, ...]:
        ts = time.time()
        sig = self.signer.sign(checkpoint_message(seq, digest, ts, kind))
        return (seq, digest, ts, sig, self.signer.public_hex)

    def _trusts(self, public: str) -> bool:
        """Whether the writer accepts a head signed by ``public`` as its predecessor's."""
        if public == self.signer.public_hex:
            return True
        if self.pinned:
            return _pinned(public, self.pinned)
        return public in _pub_keys(self.pub_path)

    def _head_issue(self, db: sqlite3.Connection, last_id: int, last_hash: str
                    ) -> dict[str, Any] | None:
        """Return what is wrong with the stored head (None: it covers the tail, validly signed).

        Only a head this handle signed itself is trusted without checking its signature.
        """
        row = db.execute("SELECT seq, hash, ts, signature, public_key FROM head").fetchone()
        if row is None:
            if last_id == 0:
                return None  # a new log
            row = _legacy_head(self.path)
        found = dict(zip(("seq", "hash", "ts", "signature", "public_key"), row, strict=True)
                     ) if row is not None else None
        issue = {"head": found, "last_id": last_id, "last_hash": last_hash}
        if row is None:
            return {**issue, "why": "no signed head covers the records"}
        seq, digest, ts, sig, public = int(row[0]), str(row[1]), float(row[2]), str(row[3]), \
            str(row[4])
        if seq != last_id or digest != last_hash:
            return {**issue, "why": f"the signed head covers record {seq}, not the last record "
                                    f"{last_id} with its hash"}
        if self._head != (seq, digest, sig):
            if not (self._trusts(public) and verify_signature(
                    public, checkpoint_message(seq, digest, ts, "head"), sig)):
                return {**issue, "why": "the head's signature is invalid or by an untrusted key"}
            self._head = (seq, digest, sig)
        return None

    def _release(self, upto: int, ids: dict[int, int]) -> None:
        with self._cond:
            self._durable = max(self._durable, upto)
            self._ids.update(ids)
            done_threads = [r for r in self._waiters.threads if r <= upto]
            done_futs = [r for r in self._waiters.futures if r <= upto]
            events = [self._waiters.threads.pop(r) for r in done_threads]
            futs = [f for r in done_futs for f in self._waiters.futures.pop(r)]
        for ev in events:
            ev.set()
        for loop, fut in futs:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, fut)

    # ---- reading ---------------------------------------------------------------------------
    def events(
        self,
        *,
        limit: int = 100,
        session_id: str | tuple[str, ...] | None = None,
        tool: str | None = None,
        kind: str | None = None,
        decision: str | None = None,
        actor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        kinds: tuple[str, ...] | None = None,
        newest_first: bool = True,
        model: str | None = None,
        user: str | None = None,
    ) -> list[AuditEvent]:
        """Return events (newest first by default), filtered; pending records are flushed first."""
        if not self._closing:
            self.flush()
        return list(iter_events(self._reader, self._read_lock, limit=limit, session_id=session_id,
                                tool=tool, kind=kind, decision=decision, actor=actor,
                                since=since, until=until, kinds=kinds, newest_first=newest_first,
                                model=model, user=user))

    def stats(self) -> dict[str, Any]:
        """Return counts by kind and decision, and the time range."""
        self.flush()
        return stats(self._reader, self._read_lock)

    def verify(self, public_key: str | None = None, *, anchor: Path | None = None
               ) -> VerifyReport:
        """Verify the whole chain (see :func:`verify`) against the pinned keys (or the .pub)."""
        self.flush()
        return verify(self.path, public_key, fingerprints=self.pinned, anchor=anchor)

    def prune(self, *, before_ts: float | None = None, keep_last: int | None = None) -> int:
        """Delete old records behind a signed anchor; return how many were deleted."""
        self.flush()
        db = self._db
        with self._write_lock:  # keep the writer out while we cut
            db.execute("BEGIN IMMEDIATE")
            try:
                last_id, _ = _tail(db)
                cut: int | None = None
                if before_ts is not None:
                    row = db.execute("SELECT MIN(id) FROM events WHERE ts >= ?",
                                     (before_ts,)).fetchone()
                    cut = row[0] if row and row[0] is not None else last_id
                if keep_last is not None:
                    k = max(last_id - keep_last + 1, 1)
                    cut = k if cut is None else max(cut, k)
                first = db.execute("SELECT MIN(id) FROM events").fetchone()[0]
                if cut is None or first is None or cut <= first:
                    db.execute("ROLLBACK")
                    return 0
                cut = min(cut, last_id)  # always keep the newest record
                prev = db.execute("SELECT hash FROM events WHERE id = ?", (cut - 1,)).fetchone()[0]
                anchor = self._signed(cut, prev, "anchor")
                db.execute("INSERT OR REPLACE INTO anchors VALUES (?,?,?,?,?)", anchor)
                n = db.execute("DELETE FROM events WHERE id < ?", (cut,)).rowcount
                db.execute("DELETE FROM checkpoints WHERE seq < ?", (cut,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        self.record("audit.retention", actor="system", decision="pruned",
                    detail={"deleted": n, "anchor": cut})
        return n

    def close(self) -> None:
        """Flush, stop the writer and close the database."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._closing = True
            self._cond.notify_all()
        self._writer.join(timeout=30)
        with self._read_lock:
            self._reader.close()
        self._db.close()
        if self.anchor is not None:
            self.anchor.close()


def mask_key_for(signer: SignerT, path: Path) -> bytes:
    """Return the key of the secret tags (derived from an Ed25519 signer, else a 0600 file).

    Ed25519 signatures are deterministic, so the key follows the signing key (file or HSM)
    and needs no file of its own.
    """
    if signer.algorithm == "ed25519":
        sig = signer.sign(b"bastion-audit/secret-tag-key/1")
        return hashlib.sha256(bytes.fromhex(sig)).digest()
    key_path = path.with_name(path.stem + "-tag.key")
    with contextlib.suppress(FileExistsError):
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(os.urandom(32).hex())
    return bytes.fromhex(key_path.read_text().strip())


def tag_text(key: bytes, value: str) -> str:
    """Return ``[REDACTED:<16 hex of HMAC-SHA256(key, value)>]``."""
    return f"[REDACTED:{hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]}]"


def _resolve(fut: asyncio.Future[int]) -> None:
    if not fut.done():
        fut.set_result(0)


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _connect(path: Path, durability: str = "committed") -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if durability == 'fsync' else 'NORMAL'}")
    db.execute("PRAGMA busy_timeout=30000")
    return db


def _tail(db: sqlite3.Connection) -> tuple[int, str]:
    row = db.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    if row:
        return int(row[0]), str(row[1])
    anchor = db.execute("SELECT first_id, prev_hash FROM anchors ORDER BY first_id DESC LIMIT 1"
                        ).fetchone()
    if anchor:
        return int(anchor[0]) - 1, str(anchor[1])
    return 0, GENESIS


def _event(r: tuple[Any, ...]) -> AuditEvent:
    return AuditEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                      json.loads(r[8]) if r[8] else None, r[9], r[10],
                      json.loads(r[11]) if r[11] else None, r[12])


def iter_events(
    db: sqlite3.Connection,
    lock: threading.Lock | None = None,
    *,
    limit: int | None = 100,
    session_id: str | tuple[str, ...] | None = None,
    tool: str | None = None,
    kind: str | None = None,
    decision: str | None = None,
    actor: str | None = None,
    since: float | None = None,
    until: float | None = None,
    kinds: tuple[str, ...] | None = None,
    newest_first: bool = True,
    model: str | None = None,
    user: str | None = None,
) -> Iterator[AuditEvent]:
    """Yield stored events matching the filters.

    ``model`` keeps the model requests whose provenance names it: a SHA-256 (or a prefix of
    at least 8 hex digits), a remote server URL, or a model id. A tuple ``session_id`` keeps
    the records of any of those sessions.
    """
    where: list[str] = []
    params: list[Any] = []
    if isinstance(session_id, tuple):  # one session under several keys (its id, its name)
        where.append(f"session_id IN ({','.join('?' * len(session_id))})")
        params.extend(session_id)
        session_id = None
    for col, val in (("session_id", session_id), ("tool", tool), ("kind", kind),
                     ("decision", decision), ("actor", actor)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if until is not None:
        where.append("ts < ?")
        params.append(until)
    if kinds:
        where.append(f"kind IN ({','.join('?' * len(kinds))})")
        params.extend(kinds)
    if user is not None:  # records written for a request of this user's keys
        where.append("json_extract(detail, '$.principal.user') = ?")
        params.append(user)
    if model is not None:
        ors = ["json_extract(detail, '$.provenance.base_url') = ?",
               "json_extract(detail, '$.provenance.model') = ?"]
        params.extend([model, model])
        if len(model) >= 8 and all(c in "0123456789abcdefABCDEF" for c in model):
            ors.append("json_extract(detail, '$.provenance.sha256') LIKE ?")
            params.append(model.lower() + "%")
        where.append("(" + " OR ".join(ors) + ")")
    sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "")
    sql += f" ORDER BY id {'DESC' if newest_first else 'ASC'}"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    if lock is None:
        for r in db.execute(sql, params):
            yield _event(r)
        return
    with lock:
        rows = db.execute(sql, params).fetchall()
    for r in rows:
        yield _event(r)


def stats(db: sqlite3.Connection, lock: threading.Lock | None = None) -> dict[str, Any]:
    """Return counts by kind, decision and tool, and the first/last timestamps."""
    lock = lock or threading.Lock()
    with lock:
        total, first, last = db.execute("SELECT COUNT(*), MIN(ts), MAX(ts) FROM events").fetchone()
        by_kind = dict(db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())
        by_decision = dict(db.execute(
            "SELECT decision, COUNT(*) FROM events WHERE decision IS NOT NULL GROUP BY decision"
        ).fetchall())
        by_tool = dict(db.execute(
            "SELECT tool, COUNT(*) FROM events WHERE tool IS NOT NULL GROUP BY tool").fetchall())
        cps = db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    return {"total": total, "first_ts": first, "last_ts": last, "by_kind": by_kind,
            "by_decision": by_decision, "by_tool": by_tool, "checkpoints": cps}


def open_reader(path: Path) -> sqlite3.Connection:
    """Open an audit database for reading only (CLI, API in another process)."""
    if not Path(path).exists():
        raise AuditError(f"no audit log at {path}", fix="run a tool first, or pass --db")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=30000")
    return db


def _pub_keys(pub: Path) -> list[str]:
    return pub.read_text().split() if pub.exists() else []


def _pinned(public: str, fingerprints: tuple[str, ...]) -> bool:
    """Return whether ``public``'s SHA-256 starts with a pinned fingerprint (>= 16 hex)."""
    full = fingerprint(public, 64)
    return any(len(fp) >= 16 and full.startswith(fp.lower()) for fp in fingerprints)


def trusted_keys(path: Path, fingerprints: tuple[str, ...] | list[str] = (),
                 candidates: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Return the keys to trust for the log at ``path``.

    With pinned ``fingerprints``: those of the ``.pub`` file's keys and ``candidates`` (e.g.
    the key inside a proof) that match a pin. Without pins: the ``.pub`` file's keys.
    """
    listed = _pub_keys(path.with_name(path.stem + "-signing.pub"))
    if not fingerprints:
        return listed
    return [k for k in dict.fromkeys([*listed, *candidates]) if _pinned(k, tuple(fingerprints))]


def _legacy_head(path: Path) -> tuple[Any, ...] | None:
    """Read the signed head file older versions kept beside the database."""
    head_path = path.with_name(path.name + ".head")
    try:
        head = json.loads(head_path.read_text())
        return (int(head["seq"]), str(head["hash"]), float(head["ts"]), str(head["signature"]),
                str(head.get("public_key", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def verify(
    path: Path,
    public_key: str | None = None,
    *,
    fingerprints: tuple[str, ...] | list[str] = (),
    public_keys: tuple[str, ...] | list[str] = (),
    anchor: Path | None = None,
) -> VerifyReport:
    """Verify an audit database: chain, ids, signed checkpoints, anchors, head and rollback.

    Which keys are trusted, strongest first: ``public_key``/``public_keys`` (hex Ed25519, or
    ``p256:<hex>`` for an HSM's P-256 key), then the pinned ``fingerprints``; with neither, the
    keys in the ``*-signing.pub`` file beside the database (the report says it is unpinned).
    ``anchor`` is an external copy of signed heads (:mod:`bastion.security._audit_anchor`):
    the log must still hold every head found there. Returns a report naming the first bad
    record.
    """
    path = Path(path)
    keys = [*public_keys, *([public_key] if public_key else [])]
    pins = tuple(fingerprints)

    def trusted(public: str) -> bool:
        if keys:
            return public in keys
        if pins:
            return _pinned(public, pins)
        return public in _pub_keys(path.with_name(path.stem + "-signing.pub"))

    heads = read_anchor(anchor) if anchor is not None and Path(anchor).exists() else None
    if anchor is not None and heads is None:
        raise AuditError(f"no anchor file at {anchor}",
                         fix="pass the file the audit anchor writes (or a SIEM export of it)")
    db = open_reader(path)
    try:
        db.execute("BEGIN")  # one snapshot: records and head as one writer left them
        rep = _verify(db, path, trusted, heads or [])
        db.execute("ROLLBACK")
    finally:
        db.close()
    rep.pinned = bool(keys or pins)
    return rep


def _verify(db: sqlite3.Connection, path: Path, trusted: Callable[[str], bool],
            external: list[dict[str, Any]]) -> VerifyReport:
    rep = VerifyReport(ok=True)

    def bad(rid: int, why: str) -> VerifyReport:
        rep.ok, rep.first_bad, rep.reason = False, rid, why
        return rep

    def signed(seq: int, digest: str, ts: float, sig: str, kind: str, public: str) -> bool:
        return trusted(public) and verify_signature(
            public, checkpoint_message(seq, digest, ts, kind), sig)

    cps = {int(r[0]): r for r in db.execute("SELECT * FROM checkpoints ORDER BY seq")}
    first = db.execute("SELECT MIN(id) FROM events").fetchone()[0]
    prev, expected = GENESIS, 1
    if first is not None and first != 1:
        anchor = db.execute("SELECT * FROM anchors WHERE first_id = ?", (first,)).fetchone()
        if anchor is None or not signed(first, anchor[1], anchor[2], anchor[3], "anchor",
                                        anchor[4]):
            return bad(1, f"records before {first} are missing and no signed anchor covers them")
        prev, expected, rep.anchored_at = anchor[1], first, first
    ext = [h for h in external if isinstance(h.get("seq"), int)
           and signed(h["seq"], str(h["hash"]), float(h["ts"]), str(h["signature"]), "head",
                      str(h["public_key"]))]
    if external and not ext:
        return bad(1, "the external anchor holds no head signed by a trusted key")
    want = {int(h["seq"]): str(h["hash"]) for h in ext}
    good_since = expected  # first record after the last verified checkpoint
    for r in db.execute("SELECT * FROM events ORDER BY id"):
        rid = int(r[0])
        if rid != expected:
            return bad(expected, f"record {expected} is missing (next stored id is {rid})")
        h = record_hash(prev, tuple(r[:12]))
        if h != r[12]:
            return bad(rid, "record does not match its hash (edited, or moved from elsewhere)")
        if r[2] == "audit.head_mismatch":
            detail = json.loads(r[11]) if r[11] else {}
            old = detail.get("head") or {}
            since = int(old["seq"]) + 1 if isinstance(old.get("seq"), int) else good_since
            return bad(min(since, rid), f"records {min(since, rid)}..{rid - 1} were added or "
                       f"changed outside bastion's writer: when it next wrote (record {rid}) "
                       f"{detail.get('why', 'its signed head did not match')}")
        if rid in want and want[rid] != h:
            return bad(good_since, f"records up to {rid} were rewritten (the external anchor's "
                                   f"signed head at {rid} does not match)")
        cp = cps.pop(rid, None)
        if cp is not None:
            if not signed(rid, cp[1], cp[2], cp[3], "checkpoint", cp[4]):
                return bad(good_since, f"checkpoint at {rid} has an invalid signature or one "
                                       f"by an untrusted key")
            if cp[1] != h:
                return bad(good_since, f"records {good_since}..{rid} were rewritten "
                                       f"(signed checkpoint at {rid} does not match)")
            rep.checkpoints += 1
            good_since = rid + 1
        prev, expected = h, rid + 1
        rep.checked += 1
    last = expected - 1
    rep.last_id = last
    if cps:
        seq = min(cps)
        return bad(last + 1, f"log truncated: signed checkpoint at {seq} but the last record is "
                             f"{last}")
    if want:
        newest = max(want)
        if newest > last:
            return bad(last + 1, f"log rolled back: the external anchor holds a signed head at "
                                 f"{newest} but the last record is {last}")
        rep.external_seq = newest
    head = db.execute("SELECT seq, hash, ts, signature, public_key FROM head").fetchone()
    if head is None:
        head = _legacy_head(path)
    if head is None:
        if rep.checked:
            return bad(good_since, f"no signed head: records {good_since}..{last} are covered by "
                                   "no signature (the head was deleted, or they were written "
                                   "without the signing key)")
        return rep
    seq = int(head[0])
    if not signed(seq, head[1], float(head[2]), head[3], "head", head[4]):
        return bad(good_since, "the head has an invalid signature or one by an untrusted key "
                               "(the trusted-keys file beside the log was swapped?)")
    if seq > last:
        return bad(last + 1, f"log truncated: signed head is at {seq} but the last record is "
                             f"{last}")
    row = db.execute("SELECT hash FROM events WHERE id = ?", (seq,)).fetchone()
    if row is not None and row[0] != head[1]:
        return bad(good_since, f"records {good_since}..{seq} were rewritten "
                               f"(signed head does not match)")
    if seq < last:
        return bad(seq + 1, f"records {seq + 1}..{last} are not covered by the signed head at "
                            f"{seq} (appended without the signing key)")
    rep.head_seq = seq
    return rep


class AuditStage:
    """Outermost gateway stage: every call, allowed or not, leaves a record.

    With durability other than ``queued`` the result is returned only once its record is
    committed, so an acknowledged call is never missing from the log.
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Run the rest of the pipeline, then record what happened."""
        start = time.perf_counter()
        result = await nxt(req)
        receipt = self.log.record(
            "tool_call",
            actor=req.actor,
            session_id=req.session_id,
            tool=req.tool.name,
            decision=result.decision,
            risk=req.risk.name.lower(),
            arguments=req.call.arguments,
            result=result.text,
            duration_ms=(time.perf_counter() - start) * 1000,
            detail={"call_id": req.call.id, "reasons": req.reasons,
                    "approved_by": req.approved_by, "error": result.error,
                    "secrets": req.annotations.get("secret_env", []), **_extra(req)},
        )
        if self.log.durability != "queued":
            await self.log.durable(receipt)
        return result


def _extra(req: CallRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if req.approval is not None:
        out["approval"] = req.approval.to_dict()
    for key in ("scan", "risk_rules", "secret_refs", "secret_bound", "undo"):
        if key in req.annotations:
            out[key] = req.annotations[key]
    return out

"""The audit log: a hash-chained, append-only SQLite record of everything the gateway decides.

Every record covers its predecessor (``hash = SHA-256(prev_hash, canonical row)``), so an
edit, deletion, reordering or truncation is detectable; signed Ed25519 checkpoints (every
``checkpoint_every`` records) and a signed head file beside the database catch a chain that
was rewritten wholesale or cut short. Retention deletes old records behind a signed *anchor*,
so what remains still verifies.

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
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bastion.crypto.keys import Signer as SignerT
from bastion.errors import AuditError
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

    def summary(self) -> str:
        """Return one line for the CLI."""
        if self.ok:
            anchor = f", anchored at {self.anchored_at}" if self.anchored_at else ""
            return (f"ok: {self.checked} records, {self.checkpoints} signed checkpoints "
                    f"verified{anchor}")
        return f"FAILED at record {self.first_bad}: {self.reason}"


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
        added = trust_key(self.path.with_name(self.path.stem + "-signing.pub"),
                          self.signer.public_hex, add=trust_signer)
        self.head_path = self.path.with_name(self.path.name + ".head")
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
        row = (
            time.time(), str(kind), _s(actor), _s(session_id), _s(tool), _s(decision), _s(risk),
            _dumps(r.data(arguments)) if arguments is not None else None,
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
            if head is not None:
                # The records are committed: the event loop's callers (the gateway, on every
                # tool call) go on now; the signed head follows. A head that lags the log is
                # what verify accepts after a crash anyway; only a head ahead of it is a cut.
                self._release_futures(batch[-1].receipt, ids)
                ids = {}  # already published; a second update would bring back popped ids
                self._write_head(*head)
            self._release(batch[-1].receipt, ids)

    def _write(
        self, batch: list[_Pending], wanted: set[int]
    ) -> tuple[dict[int, int], tuple[int, str]]:
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
            for p in batch:
                last_id += 1
                full = (last_id, *p.row)
                prev = record_hash(prev, full)
                rows.append((*full, prev))
                if p.receipt in wanted:
                    ids[p.receipt] = last_id
                if self.checkpoint_every and last_id % self.checkpoint_every == 0:
                    checkpoints.append(self._signed(last_id, prev, "checkpoint"))
            db.executemany(_INSERT, rows)
            if checkpoints:
                db.executemany("INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?)", checkpoints)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return ids, (last_id, prev)

    def _signed(self, seq: int, digest: str, kind: str) -> tuple[Any, ...]:
        ts = time.time()
        sig = self.signer.sign(checkpoint_message(seq, digest, ts, kind))
        return (seq, digest, ts, sig, self.signer.public_hex)

    def _write_head(self, seq: int, digest: str) -> None:
        """Replace the signed head file (written only after the commit, so it never runs ahead)."""
        seq_, digest_, ts, sig, pub = self._signed(seq, digest, "head")
        tmp = self.head_path.with_name(
            f"{self.head_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"seq": seq_, "hash": digest_, "ts": ts, "signature": sig,
                                   "public_key": pub}))
        os.replace(tmp, self.head_path)

    def _release_futures(self, upto: int, ids: dict[int, int]) -> None:
        """Wake the async waiters for receipts up to ``upto`` (committed, head not yet written).

        Thread waiters (``wait``/``flush``) are released by :meth:`_release`, after the head.
        """
        with self._cond:
            self._ids.update(ids)
            done = [r for r in self._waiters.futures if r <= upto]
            futs = [f for r in done for f in self._waiters.futures.pop(r)]
        for loop, fut in futs:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, fut)

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
        session_id: str | None = None,
        tool: str | None = None,
        kind: str | None = None,
        decision: str | None = None,
        actor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        kinds: tuple[str, ...] | None = None,
        newest_first: bool = True,
    ) -> list[AuditEvent]:
        """Return events (newest first by default), filtered; pending records are flushed first."""
        if not self._closing:
            self.flush()
        return list(iter_events(self._reader, self._read_lock, limit=limit, session_id=session_id,
                                tool=tool, kind=kind, decision=decision, actor=actor,
                                since=since, until=until, kinds=kinds, newest_first=newest_first))

    def stats(self) -> dict[str, Any]:
        """Return counts by kind and decision, and the time range."""
        self.flush()
        return stats(self._reader, self._read_lock)

    def verify(self, public_key: str | None = None) -> VerifyReport:
        """Verify the whole chain (see :func:`verify`); default keys: the trusted-keys file."""
        self.flush()
        return verify(self.path, public_key)

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
    session_id: str | None = None,
    tool: str | None = None,
    kind: str | None = None,
    decision: str | None = None,
    actor: str | None = None,
    since: float | None = None,
    until: float | None = None,
    kinds: tuple[str, ...] | None = None,
    newest_first: bool = True,
) -> Iterator[AuditEvent]:
    """Yield stored events matching the filters."""
    where: list[str] = []
    params: list[Any] = []
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


def _trusted_keys(path: Path, public_key: str | None) -> list[str]:
    if public_key:
        return [public_key]
    pub = path.with_name(path.stem + "-signing.pub")
    return pub.read_text().split() if pub.exists() else []


def verify(path: Path, public_key: str | None = None) -> VerifyReport:
    """Verify an audit database: chain, ids, signed checkpoints, anchors and the head file.

    ``public_key`` (hex Ed25519, or ``p256:<hex>`` for an HSM's P-256 key) is the trusted key;
    by default every key listed in the ``*-signing.pub`` file beside the database. Returns a
    report naming the first bad record.
    """
    path = Path(path)
    key = _trusted_keys(path, public_key)
    db = open_reader(path)
    try:
        return _verify(db, path, key)
    finally:
        db.close()


def _verify(db: sqlite3.Connection, path: Path, keys: list[str]) -> VerifyReport:
    rep = VerifyReport(ok=True)

    def bad(rid: int, why: str) -> VerifyReport:
        rep.ok, rep.first_bad, rep.reason = False, rid, why
        return rep

    def signed(seq: int, digest: str, ts: float, sig: str, kind: str) -> bool:
        msg = checkpoint_message(seq, digest, ts, kind)
        return any(verify_signature(k, msg, sig) for k in keys)

    cps = {int(r[0]): r for r in db.execute("SELECT * FROM checkpoints ORDER BY seq")}
    first = db.execute("SELECT MIN(id) FROM events").fetchone()[0]
    prev, expected = GENESIS, 1
    if first is not None and first != 1:
        anchor = db.execute("SELECT * FROM anchors WHERE first_id = ?", (first,)).fetchone()
        if anchor is None or not signed(first, anchor[1], anchor[2], anchor[3], "anchor"):
            return bad(1, f"records before {first} are missing and no signed anchor covers them")
        prev, expected, rep.anchored_at = anchor[1], first, first
    good_since = expected  # first record after the last verified checkpoint
    for r in db.execute("SELECT * FROM events ORDER BY id"):
        rid = int(r[0])
        if rid != expected:
            return bad(expected, f"record {expected} is missing (next stored id is {rid})")
        h = record_hash(prev, tuple(r[:12]))
        if h != r[12]:
            return bad(rid, "record does not match its hash (edited, or moved from elsewhere)")
        cp = cps.pop(rid, None)
        if cp is not None:
            if not signed(rid, cp[1], cp[2], cp[3], "checkpoint"):
                return bad(good_since, f"checkpoint at {rid} has an invalid signature")
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
    head_path = path.with_name(path.name + ".head")
    if head_path.exists():
        head = json.loads(head_path.read_text())
        seq = int(head["seq"])
        if not signed(seq, head["hash"], float(head["ts"]), head["signature"], "head"):
            return bad(good_since, "the head file has an invalid signature")
        if seq > last:
            return bad(last + 1, f"log truncated: signed head is at {seq} but the last record is "
                                 f"{last}")
        row = db.execute("SELECT hash FROM events WHERE id = ?", (seq,)).fetchone()
        if row is not None and row[0] != head["hash"]:
            return bad(good_since, f"records {good_since}..{seq} were rewritten "
                                   f"(signed head does not match)")
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
    for key in ("approval", "scan", "risk_rules", "secret_refs"):
        if key in req.annotations:
            out[key] = req.annotations[key]
    return out

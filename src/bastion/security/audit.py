"""The audit log: one SQLite record per tool call and security decision.

Records are written before the result is returned to the caller, so an acknowledged
call is on disk (WAL, synchronous=NORMAL survives a process kill).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.security.gateway import CallRequest, Next, ToolResult
from bastion.security.redact import Redactor

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id);
"""

SUMMARY_CHARS = 500


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


class AuditLog:
    """Append-only audit records in SQLite (redacted before they are written)."""

    def __init__(self, path: Path, redactor: Redactor | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.redactor = redactor or Redactor()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

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
        """Write one record (redacted) and return its id."""
        r = self.redactor
        row = (
            time.time(), kind, actor, session_id, tool, decision, risk,
            json.dumps(r.data(arguments), ensure_ascii=False, default=str),
            r.text(result)[:SUMMARY_CHARS] if result is not None else None,
            duration_ms,
            json.dumps(r.data(detail), ensure_ascii=False, default=str),
        )
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO events (ts, kind, actor, session_id, tool, decision, risk, arguments,"
                " result, duration_ms, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            return int(cur.lastrowid or 0)

    def events(self, *, limit: int = 100, session_id: str | None = None,
               tool: str | None = None, kind: str | None = None) -> list[AuditEvent]:
        """Return the newest events first, optionally filtered."""
        where, params = [], []
        for col, val in (("session_id", session_id), ("tool", tool), ("kind", kind)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*params, limit)).fetchall()
        return [
            AuditEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                       json.loads(r[8]) if r[8] else None, r[9], r[10],
                       json.loads(r[11]) if r[11] else None)
            for r in rows
        ]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class AuditStage:
    """Outermost gateway stage: every call, allowed or not, leaves a record."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Run the rest of the pipeline, then record what happened."""
        start = time.perf_counter()
        result = await nxt(req)
        self.log.record(
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
                    "approved_by": req.approved_by, "error": result.error},
        )
        return result

"""The persisted state of unattended runs (SQLite): where each run stands, and its call journal.

A run's row holds everything needed to continue it in another process: the agent's
:class:`~bastion.agent.loop.TurnState` (messages, the step, the step's calls and the results
already in), the budgets used, the parked approvals and the decisions made on them. The
``calls`` table is the journal that makes tool calls idempotent by call id: a call is marked
``started`` (committed) before the tool runs and ``done`` with its result after, so a call that
had started when bastion died is reported after a restart, never silently run again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bastion.agent.loop import TurnState
from bastion.messages import Message, ToolCall
from bastion.security.approval import ApprovalDecision, ApprovalRequest
from bastion.security.gateway import ToolResult
from bastion.tools.base import Risk

RunStatus = Literal["running", "parked", "done", "failed"]
ACTIVE: tuple[RunStatus, ...] = ("running", "parked")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, task TEXT NOT NULL, owner TEXT NOT NULL, spec TEXT NOT NULL,
    trigger TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, created REAL NOT NULL,
    ended REAL, session_id TEXT, state TEXT, parked TEXT NOT NULL DEFAULT '[]',
    decisions TEXT NOT NULL DEFAULT '{}', active_s REAL NOT NULL DEFAULT 0,
    model TEXT, audit_first INTEGER, audit_last INTEGER, answer TEXT, receipt TEXT,
    resumes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_task ON runs(owner, task, created);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS calls (
    run_id TEXT NOT NULL, call_id TEXT NOT NULL, tool TEXT NOT NULL, arguments TEXT NOT NULL,
    status TEXT NOT NULL, result TEXT, started REAL NOT NULL, ended REAL,
    PRIMARY KEY (run_id, call_id)
);
"""


@dataclass(slots=True)
class Parked:
    """One call of a run waiting for approval."""

    approval_id: str
    request: ApprovalRequest
    expires: float

    def to_dict(self) -> dict[str, Any]:
        """Return the stored form."""
        r = self.request
        return {"approval_id": self.approval_id, "expires": self.expires,
                "request": {"tool": r.tool, "arguments": r.arguments, "risk": r.risk.name,
                            "reasons": r.reasons, "session_id": r.session_id,
                            "call_id": r.call_id, "allow_session_rule": r.allow_session_rule}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parked:
        """Read the stored form."""
        r = data["request"]
        req = ApprovalRequest(r["tool"], r["arguments"], Risk.parse(r["risk"]),
                              list(r["reasons"]), r["session_id"], r["call_id"],
                              bool(r["allow_session_rule"]))
        return cls(data["approval_id"], req, float(data["expires"]))


@dataclass(slots=True)
class RunRecord:
    """One run as stored."""

    id: str
    task: str
    owner: str
    spec: dict[str, Any]
    trigger: dict[str, Any]
    status: RunStatus
    created: float
    reason: str | None = None
    ended: float | None = None
    session_id: str | None = None
    state: TurnState | None = None
    parked: list[Parked] = field(default_factory=list)
    decisions: dict[str, ApprovalDecision] = field(default_factory=dict)  # by call id
    active_s: float = 0.0
    model: dict[str, Any] | None = None
    audit_first: int | None = None
    audit_last: int | None = None
    answer: str | None = None
    receipt: dict[str, Any] | None = None
    resumes: int = 0

    def summary(self) -> dict[str, Any]:
        """Return what lists show (no messages, no arguments)."""
        return {"id": self.id, "task": self.task, "owner": self.owner, "status": self.status,
                "reason": self.reason, "created": self.created, "ended": self.ended,
                "session_id": self.session_id, "trigger": self.trigger,
                "parked": [p.approval_id for p in self.parked], "resumes": self.resumes,
                "steps": self.state.step if self.state else 0,
                "tokens": (self.state.prompt_tokens + self.state.completion_tokens)
                if self.state else 0,
                "has_receipt": self.receipt is not None}


# ---- (de)serialising the agent's state -----------------------------------------------------------
def _call(c: ToolCall) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "arguments": c.arguments}


def _msg(m: Message) -> dict[str, Any]:
    return {"role": m.role, "content": m.content, "tool_calls": [_call(c) for c in m.tool_calls],
            "tool_call_id": m.tool_call_id, "name": m.name}


def _result(r: ToolResult) -> dict[str, Any]:
    return {"call_id": r.call_id, "name": r.name, "ok": r.ok, "text": r.text,
            "decision": r.decision, "error": r.error, "duration_ms": r.duration_ms}


def result_from(d: dict[str, Any]) -> ToolResult:
    """Read a stored :class:`ToolResult` (its ``data`` is not kept)."""
    return ToolResult(d["call_id"], d["name"], bool(d["ok"]), d["text"], d["decision"],
                      d.get("error"), float(d.get("duration_ms") or 0.0))


def result_json(r: ToolResult) -> str:
    """Return a result's stored JSON."""
    return json.dumps(_result(r), ensure_ascii=False)


def state_json(s: TurnState) -> str:
    """Return the JSON of a turn's state."""
    return json.dumps({
        "session_id": s.session_id, "user_text": s.user_text,
        "history": [_msg(m) for m in s.history], "step": s.step,
        "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
        "calls": [_call(c) for c in s.calls],
        "results": {k: _result(v) for k, v in s.results.items()},
    }, ensure_ascii=False)


def state_from(text: str) -> TurnState:
    """Read a turn's state from :func:`state_json`'s form."""
    d = json.loads(text)

    def call(c: dict[str, Any]) -> ToolCall:
        return ToolCall(c["name"], c["arguments"], c["id"])

    history = [Message(m["role"], m["content"], [call(c) for c in m["tool_calls"]],
                       m["tool_call_id"], m["name"]) for m in d["history"]]
    return TurnState(d["session_id"], d["user_text"], history, int(d["step"]),
                     int(d["prompt_tokens"]), int(d["completion_tokens"]),
                     [call(c) for c in d["calls"]],
                     {k: result_from(v) for k, v in d["results"].items()})


def _decision(d: ApprovalDecision) -> dict[str, Any]:
    return {"approved": d.approved, "by": d.by, "reason": d.reason}


class RunStore:
    """The runs database (one file, WAL; every write commits before it returns)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a journal entry survives a power cut
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # ---- runs -------------------------------------------------------------------------------
    def insert(self, run: RunRecord) -> None:
        """Store a new run."""
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (id, task, owner, spec, trigger, status, created) "
                "VALUES (?,?,?,?,?,?,?)",
                (run.id, run.task, run.owner, json.dumps(run.spec), json.dumps(run.trigger),
                 run.status, run.created))

    def save(self, run: RunRecord) -> None:
        """Write a run's whole changing part."""
        with self._lock:
            self._db.execute(
                "UPDATE runs SET status=?, reason=?, ended=?, session_id=?, state=?, parked=?, "
                "decisions=?, active_s=?, model=?, audit_first=?, audit_last=?, answer=?, "
                "receipt=?, resumes=? WHERE id=?",
                (run.status, run.reason, run.ended, run.session_id,
                 state_json(run.state) if run.state is not None else None,
                 json.dumps([p.to_dict() for p in run.parked]),
                 json.dumps({k: _decision(v) for k, v in run.decisions.items()}),
                 run.active_s, json.dumps(run.model) if run.model is not None else None,
                 run.audit_first, run.audit_last, run.answer,
                 json.dumps(run.receipt) if run.receipt is not None else None,
                 run.resumes, run.id))

    _COLS = ("id, task, owner, spec, trigger, status, created, reason, ended, session_id, state, "
             "parked, decisions, active_s, model, audit_first, audit_last, answer, receipt, "
             "resumes")

    @staticmethod
    def _row(row: tuple[Any, ...]) -> RunRecord:
        (rid, task, owner, spec, trigger, status, created, reason, ended, sid, state, parked,
         decisions, active_s, model, first, last, answer, receipt, resumes) = row
        return RunRecord(
            rid, task, owner, json.loads(spec), json.loads(trigger), status, created, reason,
            ended, sid, state_from(state) if state else None,
            [Parked.from_dict(p) for p in json.loads(parked)],
            {k: ApprovalDecision(bool(v["approved"]), v["by"], v["reason"])
             for k, v in json.loads(decisions).items()},
            float(active_s), json.loads(model) if model else None, first, last, answer,
            json.loads(receipt) if receipt else None, int(resumes))

    def get(self, run_id: str) -> RunRecord | None:
        """Return one run, or ``None``."""
        with self._lock:
            row = self._db.execute(f"SELECT {self._COLS} FROM runs WHERE id=?",
                                   (run_id,)).fetchone()
        return self._row(row) if row else None

    def runs(self, *, task: str | None = None, owner: str | None = None,
             status: tuple[str, ...] | None = None, limit: int = 100) -> list[RunRecord]:
        """Return runs, newest first, filtered by task, owner and status."""
        where, args = [], []
        if task is not None:
            where.append("task=?")
            args.append(task)
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        if status:
            where.append(f"status IN ({','.join('?' * len(status))})")
            args += list(status)
        sql = f"SELECT {self._COLS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, id LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [self._row(r) for r in rows]

    # ---- the call journal ---------------------------------------------------------------------
    def call_started(self, run_id: str, call: ToolCall) -> str | None:
        """Journal ``call`` as started; return the status it had if it was journaled before."""
        with self._lock:
            row = self._db.execute("SELECT status FROM calls WHERE run_id=? AND call_id=?",
                                   (run_id, call.id)).fetchone()
            if row:
                return str(row[0])
            self._db.execute("INSERT INTO calls VALUES (?,?,?,?,?,?,?,?)",
                             (run_id, call.id, call.name, json.dumps(call.arguments),
                              "started", None, time.time(), None))
        return None

    def call_status(self, run_id: str, call_id: str) -> str | None:
        """Return a call's journal status (``started``/``done``), ``None`` if never started."""
        with self._lock:
            row = self._db.execute("SELECT status FROM calls WHERE run_id=? AND call_id=?",
                                   (run_id, call_id)).fetchone()
        return str(row[0]) if row else None

    def call_done(self, run_id: str, result: ToolResult) -> None:
        """Journal a call's result."""
        with self._lock:
            self._db.execute("UPDATE calls SET status='done', result=?, ended=? "
                             "WHERE run_id=? AND call_id=?",
                             (result_json(result), time.time(), run_id, result.call_id))

    def call_result(self, run_id: str, call_id: str) -> ToolResult | None:
        """Return a journaled call's result (``None``: none recorded)."""
        with self._lock:
            row = self._db.execute("SELECT result FROM calls WHERE run_id=? AND call_id=?",
                                   (run_id, call_id)).fetchone()
        return result_from(json.loads(row[0])) if row and row[0] else None

    def calls(self, run_id: str) -> list[dict[str, Any]]:
        """Return a run's journal in start order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT call_id, tool, status, started, ended FROM calls WHERE run_id=? "
                "ORDER BY started", (run_id,)).fetchall()
        return [{"call_id": r[0], "tool": r[1], "status": r[2], "started": r[3], "ended": r[4]}
                for r in rows]


def open_store(home: Path) -> RunStore:
    """Return the run store under bastion's home (``tasks/runs.db``)."""
    return RunStore(home / "tasks" / "runs.db")

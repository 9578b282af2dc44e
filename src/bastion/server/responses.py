"""Response bodies: the success schemas of the OpenAPI document and ``bastion.client``'s types.

Each route declares its answer as one of these models (its return annotation, or
``responses=`` for a route that answers a ``Response`` itself), so FastAPI validates what the
route returns against the schema it publishes, schemathesis's ``response_schema_conformance``
check validates the live bodies against it, and :mod:`bastion.client` parses answers into the
same classes. Models allow extra fields: a newer server may add a field without breaking an
older client (the named fields are always there, with the types given).
Pydantic only, no app, like :mod:`bastion.server.schemas`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    """Base of every response body: named fields typed, extra fields kept."""

    model_config = ConfigDict(extra="allow")


# ---- health and OpenAI-compatible models ---------------------------------------------------
class Health(Out):
    """``GET /health``."""

    status: Literal["ok", "starting"]
    version: str


class ModelEntry(Out):
    """One model (OpenAI's ``model`` object)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(Out):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelEntry]


class ChatCompletion(Out):
    """``POST /v1/chat/completions`` with ``stream: false`` (OpenAI's ``chat.completion``)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


# ---- sessions -------------------------------------------------------------------------------
class SessionCreated(Out):
    """``POST /v1/sessions``."""

    id: str
    object: Literal["session"] = "session"
    created: int


class ToolCallOut(Out):
    """One tool call an assistant message asked for (held secrets masked)."""

    id: str
    name: str
    arguments: Any


class StepApproval(Out):
    """How a tool step's approval went (as its ``approval_*`` events said)."""

    risk: str | None = Field(default=None, description="the call's effective risk level")
    approved: bool | None = Field(default=None, description="None: no decision was seen")
    by: str | None = None
    reason: str | None = None


class StepFacts(Out):
    """A tool message's step as the live stream showed it (absent for older messages)."""

    risk: str | None = Field(default=None, description="the tool's declared risk level")
    sandbox: str | None = Field(default=None, description="where it ran (tool_started)")
    ok: bool | None = None
    decision: str | None = Field(default=None, description="allowed, denied or error")
    duration_ms: float | None = None
    approval: StepApproval | None = None


class SessionMessage(Out):
    """One stored message (secrets redacted)."""

    role: str
    content: str | None
    tool_calls: list[ToolCallOut] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    step: StepFacts | None = Field(default=None, description="tool messages: risk, sandbox, "
                                   "decision and approval of their step")


class SessionPage(Out):
    """``GET /v1/sessions/{id}``: one page of the whole stored transcript."""

    id: str
    object: Literal["session"] = "session"
    busy: bool
    total: int = Field(ge=0)
    offset: int = Field(ge=0)
    messages: list[SessionMessage]


class Usage(Out):
    """Tokens of one turn."""

    prompt_tokens: int
    completion_tokens: int


class TurnAnswer(Out):
    """``POST /v1/sessions/{id}/messages`` with ``stream: false``."""

    session_id: str
    answer: str
    steps: int
    forced_final: bool
    tool_steps: list[dict[str, Any]]
    usage: Usage


class SessionInfo(Out):
    """One stored session."""

    id: str
    name: str
    created_at: float
    updated_at: float
    messages: int


class SessionList(Out):
    """``GET /v1/sessions``: most recently used first."""

    object: Literal["list"] = "list"
    data: list[SessionInfo]


class SessionDeleted(SessionInfo):
    """``DELETE /v1/sessions/{id}``: the session that was deleted."""

    deleted: Literal[True] = True


class StoredMessage(Out):
    """One message of an export: OpenAI's wire form plus its row id, position and time."""

    id: int
    seq: int
    created_at: float
    role: str
    content: str | None = None


class SessionExport(Out):
    """``GET /v1/sessions/{id}/export`` (JSON): the whole session, secrets redacted."""

    session: SessionInfo
    messages: list[StoredMessage]


# ---- memory: search and knowledge ----------------------------------------------------------
class SearchHit(Out):
    """One search result (its text redacted)."""

    kind: Literal["message", "document"]
    score: float
    text: str
    source: str = Field(description="the session's name or the document's path/name")
    session_id: str | None = None
    message_id: int | None = None
    role: str | None = None
    where: str | None = Field(default=None, description="document section or line range")
    session_url: str | None = None


class SearchResults(Out):
    """``POST /v1/search``: best first."""

    object: Literal["list"] = "list"
    data: list[SearchHit]


class IngestedFile(Out):
    """What ingesting one document did."""

    source: str
    status: str = Field(description="e.g. added, unchanged, skipped or failed")
    chunks: int
    detail: str | None = None


class IngestResult(Out):
    """``POST /v1/ingest``."""

    object: Literal["list"] = "list"
    data: list[IngestedFile]


class DocumentInfo(Out):
    """One ingested document."""

    id: str
    source: str
    sha256: str
    kind: str
    chunks: int
    size: int
    ingested_at: float


class DocumentList(Out):
    """``GET /v1/knowledge``."""

    object: Literal["list"] = "list"
    data: list[DocumentInfo]


class DocumentDeleted(DocumentInfo):
    """``DELETE /v1/knowledge/{id}``: the document that was removed."""

    deleted: Literal[True] = True


# ---- audit ----------------------------------------------------------------------------------
class AuditEvent(Out):
    """One audit record (redacted when it was written)."""

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
    hash: str
    session_name: str | None = None


class AuditEvents(Out):
    """``GET /v1/audit/events``: newest first."""

    events: list[AuditEvent]


class AuditStats(Out):
    """``GET /v1/audit/stats``."""

    total: int
    first_ts: float | None
    last_ts: float | None
    by_kind: dict[str, int]
    by_decision: dict[str, int]
    by_tool: dict[str, int]
    checkpoints: int


class AuditVerify(Out):
    """``GET /v1/audit/verify``: ``first_bad`` names the first record that fails."""

    ok: bool
    checked: int
    first_bad: int | None
    reason: str
    checkpoints: int
    anchored_at: int | None
    last_id: int | None
    head_seq: int | None
    pinned: bool
    external_seq: int | None


class Signed(Out):
    """A statement signed with the audit key."""

    signature: str
    public_key: str
    algorithm: str


class InclusionProof(Signed):
    """``GET /v1/audit/proofs/{id}``: one record, its Merkle path and the signed root."""

    format: str
    record: dict[str, Any]
    prev_hash: str | None
    salt: str
    index: int
    first_id: int
    size: int
    path: list[str]
    root: str
    chain_head: str
    ts: float


class CountProof(Signed):
    """``GET /v1/audit/count-proof``: how many records match, hiding which ones."""

    format: str
    statement: str
    predicate: str
    first: int
    last: int
    first_id: int
    size: int
    root: str
    chain_head: str
    ts: float
    proof: dict[str, Any]


class ProofCheck(Out):
    """``POST /v1/audit/verify-proof``."""

    ok: bool
    reason: str


# ---- crypto and secrets ---------------------------------------------------------------------
class SealedFile(Out):
    """One key file of the sealed set."""

    path: str
    state: Literal["plain", "sealed", "unsealed"]


class SealStatus(Out):
    """``GET /v1/crypto/seal``."""

    sealed: bool
    files: list[SealedFile]
    threshold: int | None = None
    shares: int | None = None
    set_id: str | None = None


class Rotation(Out):
    """``POST /v1/secrets/rotate``: what the rotation did (never the values)."""

    ref: str
    old_version: str | None
    new_version: str
    emergency: bool
    keys: list[str]
    destroyed: list[str]
    retire_at: float | None
    stopped_calls: int


class RetiredVersion(Out):
    """An old secret version and when it is (or was) destroyed."""

    backend: str
    path: str
    version: str
    due: float


class Rotations(Out):
    """``GET /v1/secrets/rotations``."""

    destroyed: list[RetiredVersion]
    pending: list[RetiredVersion]


# ---- approvals ------------------------------------------------------------------------------
class PendingApproval(Out):
    """A tool call waiting for a human (held secrets masked in ``arguments``)."""

    id: str
    tool: str
    arguments: Any
    risk: str
    reasons: list[str]
    session_id: str | None
    call_id: str | None
    created: float
    expires: float
    seconds_left: float
    session_name: str | None = None


class SessionRule(Out):
    """"Allow this tool for the session"."""

    session_id: str | None
    session_name: str | None
    tool: str
    by: str


class PendingList(Out):
    """``GET /v1/approvals``: oldest first."""

    pending: list[PendingApproval]
    session_rules: list[SessionRule]
    default_threshold: str


class ApprovalDecided(Out):
    """``POST /v1/approvals/{id}``."""

    id: str
    approved: bool
    scope: Literal["once", "session"]


class ThresholdSet(Out):
    """``PUT /v1/approvals/thresholds/{session_id}``."""

    session_id: str
    threshold: Literal["low", "medium", "high", "critical"]


# ---- undo -----------------------------------------------------------------------------------
class PathChange(Out):
    """What one call did to one workspace path."""

    path: str
    change: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    restorable: bool


class UndoableCall(Out):
    """One mutating tool call and what it changed."""

    call_id: str
    session_id: str | None
    tool: str
    ts: float
    counts: dict[str, int]
    changes: list[PathChange]


class UndoableCalls(Out):
    """``GET /v1/sessions/{id}/undo``: newest first."""

    session_id: str
    calls: list[UndoableCall]


class UndoReport(Out):
    """``POST /v1/sessions/{id}/undo``."""

    session_id: str | None
    dry_run: bool
    calls: list[UndoableCall]
    restored: list[dict[str, str]]
    failed: list[dict[str, str]]


# ---- privacy, intel, browser, cluster, pulled models ----------------------------------------
class PrivacyScan(Out):
    """``POST /v1/privacy/scan``: entities (offsets, never values), decision, redacted text."""

    enabled: bool
    entities: list[dict[str, Any]]
    decision: dict[str, Any]
    redacted: str


class IntelSummary(Out):
    """``GET /v1/intel/summary``: the security dashboard's data."""

    enabled: bool
    since: float
    calls: int
    decisions: dict[str, int]
    risks: dict[str, int]
    top_tools: list[list[Any]]
    anomalies: list[dict[str, Any]]
    threat_hits: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    auto_approved: int
    trust: list[dict[str, Any]]
    feeds: list[dict[str, Any]]
    models: dict[str, Any]
    problems: list[str]


class IntelReport(Out):
    """``GET /v1/intel/report`` (JSON): the compliance report for a period."""

    period: dict[str, float | None]
    generated: float
    records: int
    tool_calls: dict[str, Any]
    approvals: dict[str, Any]
    policy_denials: Any
    secrets_used: dict[str, Any]
    egress_denials: dict[str, Any]
    anomalies: dict[str, Any]
    threat_intel_hits: dict[str, Any]
    alerts: dict[str, Any]
    audit_chain: dict[str, Any]
    controls: Any


class BrowserSessions(Out):
    """``GET /v1/browser/sessions``."""

    enabled: bool
    sandboxed: bool | None
    sandbox_problem: str | None = None
    sessions: list[dict[str, Any]]


class BrowserClosed(Out):
    """``DELETE /v1/browser/sessions/{id}``."""

    closed: str


class NodeStatus(Out):
    """One cluster node: health, breaker, load, latency and speed."""

    name: str
    url: str
    healthy: bool | None = Field(description="null until the first health check")
    breaker: str
    draining: bool
    in_flight: int
    served: int


class ClusterStatus(Out):
    """``GET /v1/cluster``."""

    model: str | None
    tier: str | None
    nodes: list[NodeStatus]
    services: list[dict[str, Any]]


class PulledModel(Out):
    """An installed model with its manifest."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    in_use: bool


class PulledList(Out):
    """``GET /v1/models/pulled``."""

    object: Literal["list"] = "list"
    data: list[PulledModel]


class PulledDeleted(Out):
    """``DELETE /v1/models/pulled/{name}``."""

    id: str
    object: Literal["model"] = "model"
    deleted: Literal[True] = True
    size: int


class Transcript(Out):
    """``POST /v1/audio/transcriptions`` (``json``; ``verbose_json`` adds segments)."""

    text: str
    language: str | None = None
    duration: float | None = None
    segments: list[dict[str, Any]] | None = None

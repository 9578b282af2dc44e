"""Per-client MCP state: log level, resource subscriptions, progress and approval prompts.

- Logging: ``logging/setLevel`` (handshake-era clients) or the request's
  ``io.modelcontextprotocol/logLevel`` ``_meta`` (2026-07-28 clients) picks what the client
  gets; every message passes the redactor first.
- Progress: a ``tools/call`` that carries a progress token gets a notification when the
  gateway starts, when its checks pass and the tool runs, every second while it runs, and
  when it ends.
- Subscriptions: one poller watches the subscribed workspace files (size, mtime, inode) and
  tells each subscriber when one changes (``notifications/resources/updated``).
- Approvals: :class:`ElicitingApprover` asks the MCP client's user through
  ``elicitation/create`` when a call needs approval and the client can answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.errors import BastionError
from bastion.security.approval import ApprovalDecision, ApprovalRequest, Approver
from bastion.security.gateway import CallRequest, Next, ToolResult
from bastion.security.redact import Redactor
from bastion.tools.builtin._paths import open_in_workspace

log = logging.getLogger(__name__)

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
LOG_LEVEL_META_KEY = "io.modelcontextprotocol/logLevel"
DEFAULT_LEVEL = "info"
LOGGER = "bastion.gateway"
HEARTBEAT_S = 1.0
POLL_S = 0.25


def connection_of(ctx: Any) -> Any:
    """Return the SDK's per-client ``Connection`` behind a request context (or ``None``)."""
    return getattr(ctx.session, "_connection", None)


def _state(ctx: Any) -> dict[str, Any]:
    conn = connection_of(ctx)
    return conn.state if conn is not None else {}


def set_level(ctx: Any, level: str) -> None:
    """Remember the client's ``logging/setLevel`` for its connection."""
    _state(ctx)["bastion.log_level"] = level


def is_modern(ctx: Any) -> bool:
    """Whether the request speaks the 2026-07-28 protocol (no server-to-client requests)."""
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def client_level(ctx: Any) -> str | None:
    """Return the lowest level this request's client wants (``None``: no log messages)."""
    meta = ctx.meta or {}
    if is_modern(ctx):  # per-request opt-in; absent: none
        wanted = meta.get(LOG_LEVEL_META_KEY)
        return wanted if wanted in LEVELS else None
    level = _state(ctx).get("bastion.log_level", DEFAULT_LEVEL)
    return level if level in LEVELS else DEFAULT_LEVEL


class ClientLog:
    """Sends log messages (``notifications/message``) to one request's client, redacted."""

    def __init__(self, ctx: Any, redactor: Redactor) -> None:
        self.ctx = ctx
        self.redactor = redactor
        self.level = client_level(ctx)

    def wants(self, level: str) -> bool:
        """Whether the client asked for messages at ``level``."""
        return self.level is not None and LEVELS.index(level) >= LEVELS.index(self.level)

    async def send(self, level: str, data: Any) -> None:
        """Send ``data`` at ``level`` if the client wants it (never raises)."""
        if not self.wants(level):
            return
        import mcp_types as types

        note = types.LoggingMessageNotification(params=types.LoggingMessageNotificationParams(
            level=level, data=self.redactor.data(data), logger=LOGGER))  # type: ignore[arg-type]
        with contextlib.suppress(Exception):  # a client gone mid-call must not fail the call
            await self.ctx.session.send_notification(note, related_request_id=self.ctx.request_id)


@dataclass
class CallReporter:
    """Progress and log messages about one ``tools/call`` while the gateway runs it."""

    ctx: Any
    log: ClientLog
    tool: str
    progress: float = 0.0
    started: float = field(default_factory=time.monotonic)
    running: bool = False
    answer: Any = None  # the client's ElicitResult to an approval asked in an earlier round
    asked: tuple[str, dict[str, Any]] | None = None  # (message, schema) to ask in a new round

    @property
    def wants_progress(self) -> bool:
        """Whether the client sent a progress token."""
        return bool((self.ctx.meta or {}).get("progress_token") or
                    (self.ctx.meta or {}).get("progressToken"))

    async def step(self, message: str, *, total: float | None = None) -> None:
        """Send the next progress notification (a no-op without a progress token)."""
        self.progress += 1
        if self.wants_progress:
            with contextlib.suppress(Exception):
                await self.ctx.session.report_progress(self.progress, total, message)

    async def checks_passed(self, req: CallRequest) -> None:
        """Called by :class:`ProgressStage` when the call passed policy and approval."""
        self.running = True
        how = f"approved by {req.approved_by}" if req.approved_by else "allowed"
        await self.log.send("debug", {"event": "gateway.passed", "tool": self.tool,
                                      "risk": req.risk.name.lower(), "decision": how})
        await self.step(f"{self.tool}: gateway checks passed ({how}); running")

    async def heartbeat(self) -> None:
        """Report elapsed time every second until cancelled."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if self.running:
                await self.step(f"{self.tool}: running for {time.monotonic() - self.started:.0f}s")

    async def finished(self, result: ToolResult) -> None:
        """Send the final progress and the gateway's decision as a log message."""
        await self.step(f"{self.tool}: {result.decision}", total=self.progress + 1)
        entry: dict[str, Any] = {"event": "gateway.decision", "tool": self.tool,
                                 "decision": result.decision,
                                 "duration_ms": round(result.duration_ms, 1)}
        if not result.ok:
            entry["reason"] = result.error or result.text
        level = "info" if result.ok else ("warning" if result.decision == "denied" else "error")
        await self.log.send(level, entry)


current_call: contextvars.ContextVar[CallReporter | None] = contextvars.ContextVar(
    "bastion_mcp_call", default=None)


async def run_reported(reporter: CallReporter, call: Awaitable[ToolResult]) -> ToolResult:
    """Await the gateway ``call`` with ``reporter`` current (heartbeats while it runs)."""
    token = current_call.set(reporter)
    beat = asyncio.ensure_future(reporter.heartbeat()) if reporter.wants_progress else None
    try:
        await reporter.step(f"{reporter.tool}: checking policy")
        result = await call
    finally:
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        current_call.reset(token)
    await reporter.finished(result)
    return result


class ProgressStage:
    """Innermost gateway stage: tells the current MCP call that its checks passed.

    It sits after policy, risk, approval and secrets, so reaching it means the call will
    run. Outside an MCP call it does nothing.
    """

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Report, then run the tool."""
        reporter = current_call.get()
        if reporter is not None:
            await reporter.checks_passed(req)
        return await nxt(req)


class ElicitingApprover:
    """Asks the MCP client's user (``elicitation/create``) to approve a risky call.

    Used when the call came from an MCP client that declared the elicitation capability
    and can take a server request on this exchange; otherwise ``fallback`` decides (deny,
    or ``--yes``). The approval manager audits the decision with ``by`` naming the client.
    """

    def __init__(self, fallback: Approver, redactor: Redactor) -> None:
        self.fallback = fallback
        self.redactor = redactor

    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        """Ask the client's user, or the fallback when there is no one to ask.

        A 2025 client is asked with an ``elicitation/create`` request while the call waits.
        A 2026-07-28 client cannot take server requests: the call is refused for now and
        :meth:`BastionMCP.call_tool` answers with an ``InputRequiredResult`` carrying the
        question; the client retries with the user's answer, which decides here.
        """
        reporter = current_call.get()
        ctx = reporter.ctx if reporter is not None else None
        if reporter is None or ctx is None or not can_elicit(ctx):
            return await self.fallback.decide(request, timeout_s=timeout_s)
        who = _client_name(ctx)
        if reporter.answer is not None:
            return _decision(reporter.answer, who)
        args = self.redactor.held_data(request.arguments)
        why = "; ".join(request.reasons) or f"risk {request.risk.name.lower()}"
        message = (f"bastion: allow the tool call {request.tool}({_short(args)})? "
                   f"It needs approval: {why}.")
        if not getattr(ctx.session, "can_send_request", False):
            if not is_modern(ctx):  # a 2025 exchange that cannot carry a request
                return await self.fallback.decide(request, timeout_s=timeout_s)
            reporter.asked = (message, APPROVAL_SCHEMA)  # 2026: ask in a new round
            return ApprovalDecision(False, who, "asked the MCP client's user; the client "
                                                "retries the call with the answer")
        try:
            answer = await asyncio.wait_for(
                ctx.session.elicit_form(message, APPROVAL_SCHEMA,
                                        related_request_id=ctx.request_id),
                timeout_s)
        except TimeoutError:
            return ApprovalDecision(False, who, f"no answer within {timeout_s:.0f}s")
        except Exception as exc:  # the client failed to ask: never approve by accident
            return ApprovalDecision(False, who, f"the client could not ask: {exc}")
        return _decision(answer, who)


APPROVAL_KEY = "bastion.approval"
APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"decision": {
        "type": "string", "title": "Decision", "enum": ["approve", "deny"],
        "description": "approve runs this one call; deny refuses it"}},
    "required": ["decision"],
}


def _decision(answer: Any, who: str) -> ApprovalDecision:
    if isinstance(answer, dict):
        content, action = answer.get("content") or {}, answer.get("action", "cancel")
    else:
        content = getattr(answer, "content", None) or {}
        action = getattr(answer, "action", "cancel")
    if action == "accept" and content.get("decision") == "approve":
        return ApprovalDecision(True, who, "approved by the MCP client's user")
    return ApprovalDecision(False, who, f"the MCP client's user answered {action}"
                                        f"{' (deny)' if action == 'accept' else ''}")


def can_elicit(ctx: Any) -> bool:
    """Whether the request's client declared the elicitation capability."""
    caps = getattr(ctx.session, "client_capabilities", None)
    return caps is not None and caps.elicitation is not None


class RoundState:
    """Signs the ``request_state`` of an approval round, bound to the call and the client.

    The retry carries the client's answer; it counts only once (a random nonce, remembered
    until it expires), for the same tool and arguments, from the same client (its MCP
    session id, or the client name it declared when the transport has no session), within
    ``ttl_s``, in this process (the key is random per process).
    """

    def __init__(self, ttl_s: float = 600.0) -> None:
        self.key = os.urandom(32)
        self.ttl_s = ttl_s
        self._used: dict[str, int] = {}  # nonce -> expiry

    def _mac(self, tool: str, args: Any, expires: int, nonce: str, client: str) -> str:
        import hashlib
        import hmac
        import json

        body = json.dumps([tool, args, expires, nonce, client], sort_keys=True,
                          default=str).encode()
        return hmac.new(self.key, body, hashlib.sha256).hexdigest()

    def issue(self, tool: str, args: Any, client: str) -> str:
        """Return the state for a round asking ``client`` about ``tool(args)``."""
        expires = int(time.time() + self.ttl_s)
        nonce = os.urandom(12).hex()
        return f"{expires}.{nonce}.{self._mac(tool, args, expires, nonce, client)}"

    def redeem(self, state: str | None, tool: str, args: Any, client: str) -> bool:
        """Whether ``state`` was issued for this call and client, is fresh and unused.

        A valid state is used up: the same answer cannot approve a second call.
        """
        import hmac

        parts = (state or "").split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return False
        expires, nonce, mac = int(parts[0]), parts[1], parts[2]
        now = time.time()
        if expires < now or nonce in self._used:
            return False
        if not hmac.compare_digest(mac, self._mac(tool, args, expires, nonce, client)):
            return False
        for old in [n for n, exp in self._used.items() if exp < now]:
            del self._used[old]
        self._used[nonce] = expires
        return True


def client_key(ctx: Any) -> str:
    """Who a request comes from, as far as the transport tells: session id, else client name."""
    conn = connection_of(ctx)
    sid = getattr(conn, "session_id", None)
    return f"session:{sid}" if sid else _client_name(ctx)


def _client_name(ctx: Any) -> str:
    params = getattr(ctx.session, "client_params", None)
    info = getattr(params, "client_info", None)
    return f"mcp-client:{getattr(info, 'name', None) or 'unknown'}"


def _short(args: Any, limit: int = 300) -> str:
    import json

    text = json.dumps(args, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


# ---- resource subscriptions ------------------------------------------------------------------

Listener = Callable[[str], Awaitable[None]]


def file_signature(root: Path, rel: str) -> tuple[int, int, int] | None:
    """Return (mtime_ns, size, inode) of a workspace file, ``None`` if it is absent.

    Opened with the file tools' confinement, so a path (or a symlink swapped in later)
    that leads out of the workspace reads as absent rather than being followed.
    """
    try:
        fd, _ = open_in_workspace(root, rel, os.O_RDONLY | os.O_NONBLOCK)
    except (BastionError, OSError):
        return None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Watcher:
    """Polls the subscribed workspace files and calls their listeners on a change."""

    def __init__(self, root: Path, interval_s: float = POLL_S) -> None:
        self.root = root
        self.interval_s = interval_s
        self._watches: dict[str, tuple[str, list[Listener]]] = {}  # uri -> (rel, listeners)
        self._seen: dict[str, tuple[int, int, int] | None] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, uri: str, rel: str, listener: Listener) -> Callable[[], None]:
        """Watch ``uri`` for ``listener``; return the function that stops it."""
        if uri not in self._watches:
            self._watches[uri] = (rel, [])
            self._seen[uri] = file_signature(self.root, rel)
        self._watches[uri][1].append(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())

        def remove() -> None:
            entry = self._watches.get(uri)
            if entry is not None and listener in entry[1]:
                entry[1].remove(listener)
                if not entry[1]:
                    del self._watches[uri]
                    self._seen.pop(uri, None)

        return remove

    async def _poll(self) -> None:
        while self._watches:
            await asyncio.sleep(self.interval_s)
            for uri, (rel, listeners) in list(self._watches.items()):
                sig = file_signature(self.root, rel)
                if sig == self._seen.get(uri):
                    continue
                self._seen[uri] = sig
                for listener in dict.fromkeys(listeners):  # one call per distinct listener
                    try:
                        await listener(uri)
                    except Exception:  # one gone client must not stop the others
                        log.debug("resource listener for %s failed", uri, exc_info=True)

    def close(self) -> None:
        """Stop polling."""
        self._watches.clear()
        if self._task is not None:
            self._task.cancel()

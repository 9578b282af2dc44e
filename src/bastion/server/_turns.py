"""Running agent turns for API clients: one turn per session at a time, events redacted."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from bastion.agent.events import AgentEvent, ToolFinished, ToolStarted, TurnDone, TurnError
from bastion.agent.loop import Agent
from bastion.errors import MemoryStoreError, ToolNotFoundError
from bastion.memory.base import ConversationMemory, EphemeralMemory
from bastion.messages import ChatSettings, Message, TextDelta
from bastion.security.identity import acting_as, current, owner_filter, owner_name
from bastion.server._openai import SESSION_ID_PATTERN
from bastion.server.errors import ApiError
from bastion.server.events import event_payload
from bastion.server.sse import StreamRedactor
from bastion.tools.base import Risk

if TYPE_CHECKING:
    from bastion.app import App

log = logging.getLogger(__name__)

API_ACTOR = "api"
_SID = re.compile(SESSION_ID_PATTERN)


class BusySessions:
    """Which sessions have a turn running; a second turn on the same session is refused.

    Per owner (the requester's, read when called): each user's ``main`` is their own, so a
    turn in alice's ``main`` never makes bob's busy (nor tells him she has one).
    """

    def __init__(self) -> None:
        self._busy: set[tuple[str, str]] = set()

    def claim(self, session_id: str) -> bool:
        """Mark the caller's ``session_id`` busy; False if it already was."""
        key = (owner_name(), session_id)
        if key in self._busy:
            return False
        self._busy.add(key)
        return True

    def release(self, session_id: str) -> None:
        """Mark the caller's ``session_id`` free again."""
        self._busy.discard((owner_name(), session_id))

    def __contains__(self, session_id: object) -> bool:
        return (owner_name(), session_id) in self._busy


def busy_sessions(conn: HTTPConnection) -> BusySessions:
    """Return the API's busy-session registry (created on first use)."""
    state = conn.app.state
    reg: BusySessions | None = getattr(state, "busy_sessions", None)
    if reg is None:
        reg = state.busy_sessions = BusySessions()
    return reg


def created_sessions(conn: HTTPConnection) -> set[tuple[str, str]]:
    """Return the (owner, id) pairs made by ``POST /v1/sessions`` in this process.

    Only the caller's own pairs may be consulted: another owner's id here is no answer.
    """
    state = conn.app.state
    created: set[tuple[str, str]] | None = getattr(state, "created_sessions", None)
    if created is None:
        created = state.created_sessions = set()
    return created


def check_session_id(session_id: str, param: str = "session_id") -> str:
    """Validate a session id from a client."""
    if not _SID.match(session_id):
        raise ApiError(
            400, f"invalid session id {session_id[:40]!r}", code="invalid_session_id",
            param=param, fix="use 1-128 letters, digits and _ . : @ -",
        )
    return session_id


def record_keys(app: App, key: str, *, every_owner: bool = False) -> tuple[str, ...]:
    """Return what the audit, approval and undo records of the caller's session ``key`` carry.

    Never empty: a session the caller does not have gives a key no record carries.
    ``every_owner``: resolve ``key`` among every user's sessions, as an admin's ``all_users``
    does (the audit log: whoever may read it reads every user's records anyway).
    """
    principal = current()
    if every_owner and principal is not None and not principal.all_users:
        with acting_as(dataclasses.replace(principal, all_users=True)):
            return record_keys(app, key)
    from bastion.memory.persistent import PersistentMemory
    from bastion.memory.store import NO_SESSION

    mem = app.memory
    if isinstance(mem, PersistentMemory):
        return mem.store.record_keys(key)
    find = getattr(mem, "session_id", None)
    sid = find(key) if find is not None else key
    if not isinstance(sid, str):
        return (key,) if owner_filter() is None else (NO_SESSION,)
    return (sid,)


def session_names(app: App, ids: Iterable[str | None]) -> dict[str, str]:
    """Map stored session ids to their current names (those the app's memory knows)."""
    from bastion.memory.persistent import PersistentMemory

    mem = app.memory
    wanted = sorted({i for i in ids if i})
    return mem.store.session_names(wanted) if isinstance(mem, PersistentMemory) else {}


def busy_error(session_id: str) -> ApiError:
    """The error for a second concurrent turn on one session."""
    return ApiError(409, f"session {session_id} is busy with another turn", code="session_busy",
                    fix="wait for the running turn to finish")


async def make_agent(
    app: App,
    session_id: str,
    *,
    extra_system: Iterable[str] = (),
    settings: ChatSettings | None = None,
    seed: Sequence[Message] = (),
    ephemeral: bool = False,
) -> Agent:
    """Return ``app.agent()`` adjusted for one request.

    Args:
        app: the bastion app.
        session_id: the session the turn runs in.
        extra_system: client system messages, appended to the agent's system prompt.
        settings: generation settings for this request (tool choice stays the agent's).
        seed: earlier messages sent by the client; stored only if the session is empty
            (a session that already has history keeps its own).
        ephemeral: run in a private in-memory session (a stateless OpenAI-style request)
            instead of ``app.memory``.
    """
    agent = app.agent()
    if current() is not None:  # an API key's turn: its tokens count against its quotas
        from bastion.config import paths
        from bastion.security.quota import TokenMeter, quotas_for

        agent.model = TokenMeter(agent.model, quotas_for(paths.home()))
    extra = [s for s in extra_system if s.strip()]
    if extra:
        agent.options.system_prompt = "\n\n".join([agent.options.system_prompt, *extra])
    if settings is not None:
        base = agent.options.settings
        agent.options.settings = ChatSettings(
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            tool_choice=base.tool_choice,
            stop=list(settings.stop),
            seed=settings.seed,
        )
    if ephemeral:
        agent.memory = RequestMemory(app.memory)
    if seed and not await agent.memory.history(session_id):
        for message in seed:
            await agent.memory.append(session_id, message)
    return agent


class RequestMemory:
    """A stateless request's conversation: kept for this request only, never stored.

    The model's context is still built by the app's memory (windowing to the context size,
    retrieved knowledge), exactly as for a stored session.
    """

    def __init__(self, backing: ConversationMemory) -> None:
        self._local = EphemeralMemory()
        self._backing = backing

    async def open_session(self, key: str) -> str:
        """Return ``key`` (nothing is stored for this request)."""
        return key

    async def history(self, session_id: str) -> list[Message]:
        """Return the request's messages so far."""
        return await self._local.history(session_id)

    async def append(self, session_id: str, message: Message) -> None:
        """Keep ``message`` for the rest of this request."""
        await self._local.append(session_id, message)

    async def transcript(
        self, session_id: str, offset: int = 0, limit: int = 100
    ) -> tuple[int, list[Message]]:
        """Return the request's messages so far, paged."""
        return await self._local.transcript(session_id, offset, limit)

    async def build_context(
        self, session_id: str, system: Message, history: Sequence[Message], query: str
    ) -> list[Message]:
        """Delegate to the app's memory (window + RAG) without storing anything."""
        return await self._backing.build_context(session_id, system, history, query)

    async def aclose(self) -> None:
        """Nothing to close: the backing memory belongs to the app."""


@dataclass
class TurnSummary:
    """A finished turn, for non-streaming responses."""

    answer: str = ""
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    forced_final: bool = False
    tool_steps: list[dict[str, Any]] = field(default_factory=list)


def merge_tool_step(steps: list[dict[str, Any]], name: str, payload: dict[str, Any]) -> None:
    """Fold ``tool_started``/``tool_finished`` payloads into one entry per call."""
    body = {k: v for k, v in payload.items() if k != "type"}
    if name == "tool_started":
        steps.append(body)
        return
    for entry in steps:
        if entry.get("call_id") == body["call_id"]:
            entry.update(body)
            return
    steps.append(body)


async def collect_turn(app: App, agent: Agent, text: str, session_id: str) -> TurnSummary:
    """Run a turn to the end; a :class:`TurnError` becomes a 502 :class:`ApiError`."""
    out = TurnSummary()
    async for ev in agent.run(text, session_id=session_id, actor=API_ACTOR):
        if isinstance(ev, ToolStarted | ToolFinished):
            name, payload = event_payload(ev, app.redactor)
            merge_tool_step(out.tool_steps, name, payload)
        elif isinstance(ev, TurnDone):
            out.answer = app.redactor.text(ev.answer)
            out.steps = ev.steps
            out.prompt_tokens = ev.prompt_tokens
            out.completion_tokens = ev.completion_tokens
            out.forced_final = ev.forced_final
        elif isinstance(ev, TurnError):
            raise ApiError(502, app.redactor.text(ev.message), code="agent_error")
    return out


async def redacted_events(
    app: App, agent: Agent, text: str, session_id: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield ``(name, payload)`` for each agent event; text is redacted across deltas."""
    from bastion.server._approval_stream import with_approvals

    red = StreamRedactor(app.redactor)
    ev: AgentEvent | dict[str, Any]
    sid = await agent.memory.open_session(session_id)  # approvals carry the stored id
    events = agent.run(text, session_id=sid, actor=API_ACTOR)
    shown = StepLog()
    try:
        async for ev in with_approvals(app.hitl, sid, events):
            if isinstance(ev, dict):  # approval_pending / approval_resolved: the agent waits
                shown.see(ev["type"], ev)
                yield ev["type"], ev
                continue
            if isinstance(ev, TextDelta):
                piece = red.feed(ev.text)
                if piece:
                    yield "text", {"type": "text", "text": piece}
                continue
            tail = red.flush()  # text before a tool step or the end goes out first
            if tail:
                yield "text", {"type": "text", "text": tail}
            name, payload = event_payload(ev, app.redactor)
            if name == "tool_started":
                payload.update(tool_facts(app, payload["name"]))
            shown.see(name, payload)
            yield name, payload
    finally:  # also when the client stopped the turn: the steps that ran are stored
        from bastion.memory.persistent import PersistentMemory

        if shown.steps and isinstance(agent.memory, PersistentMemory):
            try:
                await agent.memory.record_steps(sid, shown.steps)
            except MemoryStoreError as exc:  # the transcript shows the step without them
                log.warning("tool step facts not stored: %s", exc)


@dataclass
class StepLog:
    """What a client was shown of each tool step of a turn, to show again in its transcript.

    ``steps`` maps a call id to its ``risk`` and ``sandbox`` (``tool_started``), ``ok``,
    ``decision`` and ``duration_ms`` (``tool_finished``) and, when it waited for a person,
    ``approval``: ``risk``, ``approved``, ``by``, ``reason``.
    """

    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    _calls: dict[str, str] = field(default_factory=dict)  # approval id -> call id

    def see(self, name: str, payload: dict[str, Any]) -> None:
        """Note one streamed event (others than the step events are ignored)."""
        call_id = payload.get("call_id")
        if name == "approval_resolved":
            call_id = self._calls.get(str(payload.get("id")))
        if not isinstance(call_id, str):
            return
        step = self.steps.setdefault(call_id, {})
        if name == "tool_started":
            step.update(risk=payload.get("risk"), sandbox=payload.get("sandbox"))
        elif name == "approval_pending":
            self._calls[str(payload.get("id"))] = call_id
            step["approval"] = {"risk": str(payload.get("risk") or "").lower()}
        elif name == "approval_resolved":
            step.setdefault("approval", {}).update(
                approved=bool(payload.get("approved")), by=payload.get("by"),
                reason=payload.get("reason"))
        elif name == "tool_finished":
            step.update(ok=payload.get("ok"), decision=payload.get("decision"),
                        duration_ms=payload.get("duration_ms"))


def tool_facts(app: App, name: str) -> dict[str, str | None]:
    """Return a tool's declared ``risk`` and where it runs (``sandbox``) for a client to show.

    ``sandbox`` is the backend of the tool's sandbox (bubblewrap, gvisor, podman, docker),
    ``unavailable`` when a sandboxed tool has none, or ``in-process`` for tools that run in
    bastion itself (confined to the workspace by their own checks); both ``None`` for a tool
    the registry does not know. A call's effective risk (raised by the risk rules) is in its
    ``approval_pending`` event.
    """
    try:
        tool = app.registry.get(name)
    except ToolNotFoundError:  # the gateway refuses the call itself
        return {"risk": None, "sandbox": None}
    if getattr(tool, "sandboxed", False):
        env = app.gateway.environment
        runner = env.runners.get(name) or env.sandbox
        sandbox = getattr(runner, "name", None) if runner is not None else "unavailable"
    else:
        sandbox = "in-process"
    return {"risk": Risk(tool.risk).name.lower(), "sandbox": sandbox}

"""The agent loop: messages -> model -> tool calls -> gateway -> results -> ... -> answer."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bastion.agent.events import (
    AgentEvent,
    ToolFinished,
    ToolStarted,
    TurnDone,
    TurnError,
    TurnParked,
)
from bastion.errors import BastionError, ModelOutputError
from bastion.llm.base import Model
from bastion.memory.base import ConversationMemory, EphemeralMemory
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from bastion.security.approval import ApprovalParked, ApprovalRequest
from bastion.security.gateway import Gateway, ToolResult
from bastion.telemetry import Span, activate, recording, span, start, within
from bastion.telemetry.metrics import METRICS

FINAL_NUDGE = "Answer the user now in plain text, using the tool results above. Do not call tools."


@dataclass(slots=True)
class AgentOptions:
    """Loop settings."""

    system_prompt: str
    max_steps: int = 6
    settings: ChatSettings = field(default_factory=ChatSettings)
    tools: Sequence[str] | None = None  # None = every registered tool
    model_retries: int = 1


@dataclass(slots=True)
class TurnState:
    """Where a turn stands: enough to continue it later, in this process or another.

    ``history`` is the conversation so far (the user's message included), ``step`` the last
    model step taken, ``calls`` that step's tool calls and ``results`` those of them that came
    back (their tool messages are appended once all are in).
    """

    session_id: str
    user_text: str
    history: list[Message]
    step: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: list[ToolCall] = field(default_factory=list)
    results: dict[str, ToolResult] = field(default_factory=dict)


Checkpoint = Callable[[TurnState], Awaitable[None]]
"""Called with the turn's state after each model step and each tool result (to persist it)."""


@dataclass(slots=True)
class _StepOutput:
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish: str = "stop"


class Agent:
    """One agent: a model, a gateway (the only way to tools) and a memory."""

    def __init__(
        self,
        model: Model,
        gateway: Gateway,
        options: AgentOptions,
        memory: ConversationMemory | None = None,
    ) -> None:
        self.model = model
        self.gateway = gateway
        self.options = options
        self.memory: ConversationMemory = memory or EphemeralMemory()

    def tool_specs(self) -> list[ToolSpec]:
        """Return the specs offered to the model."""
        return self.gateway.registry.specs(self.options.tools)

    @staticmethod
    def new_session_id() -> str:
        """Return a fresh session id."""
        return uuid.uuid4().hex[:12]

    async def run(
        self, user_text: str, *, session_id: str | None = None, actor: str = "agent",
        resume: TurnState | None = None, checkpoint: Checkpoint | None = None,
    ) -> AsyncIterator[AgentEvent]:
        """Run one user turn, streaming events; ends in :class:`TurnDone` or :class:`TurnError`.

        ``session_id`` is a session's name or id; tool calls and their audit records carry
        the id it is stored under (a rename does not orphan them). ``resume`` continues a
        turn from a saved state (its calls without a result run first); ``checkpoint`` is
        handed the state as it changes. A turn whose approver parks a call ends in
        :class:`TurnParked`.
        """
        if resume is not None:
            session_id, user_text = resume.session_id, resume.user_text
        sid = await self.memory.open_session(session_id or self.new_session_id())
        turn = start("invoke_agent bastion", {"gen_ai.operation.name": "invoke_agent",
                                               "gen_ai.agent.name": "bastion",
                                               "gen_ai.conversation.id": sid})
        outcome = "cancelled"  # unless it ends in TurnDone / TurnError
        METRICS.turns_active.inc()
        try:
            async for ev in self._turn(user_text, sid, actor, turn, resume, checkpoint):
                if isinstance(ev, TurnDone):
                    outcome = "done"
                    turn.set("gen_ai.usage.input_tokens", ev.prompt_tokens)
                    turn.set("gen_ai.usage.output_tokens", ev.completion_tokens)
                    turn.set("bastion.turn.steps", ev.steps)
                elif isinstance(ev, TurnError):
                    outcome = "error"
                    turn.fail(ev.message)
                elif isinstance(ev, TurnParked):
                    outcome = "parked"
                yield ev
        finally:
            turn.set("bastion.turn.outcome", outcome)
            turn.end()
            METRICS.turns_active.inc(-1)
            METRICS.turns.inc(outcome=outcome)

    async def _turn(
        self, user_text: str, sid: str, actor: str, turn: Span, resume: TurnState | None,
        checkpoint: Checkpoint | None,
    ) -> AsyncIterator[AgentEvent]:
        if resume is None:
            history = await self.memory.history(sid)
            user = Message("user", user_text)
            await self.memory.append(sid, user)
            history.append(user)
            state = TurnState(sid, user_text, history)
        else:
            state = resume
            history = state.history
        system = Message("system", self.options.system_prompt)
        specs = self.tool_specs()
        max_steps = self.options.max_steps
        if state.calls:  # resumed between a step's tool calls and its next model step
            async for ev in self._run_tools(state, actor, turn, checkpoint):
                yield ev
                if isinstance(ev, TurnParked):
                    return
        for step in range(state.step + 1, max_steps + 2):
            final = step > max_steps
            with activate(turn), span("memory.context") as mem:  # window + RAG retrieval
                context = await self.memory.build_context(sid, system, history, user_text)
                mem.set("bastion.memory.context_length", len(context))
            if final:
                context = [*context, Message("user", FINAL_NUDGE)]
            settings = self._settings("none" if final or not specs else None)
            out = _StepOutput()
            call = self._model_span(turn, context, settings)
            try:
                async for ev in self._model_step(context, [] if final else specs, settings, out,
                                                 call):
                    yield ev
            except BastionError as exc:
                call.fail(exc.message)
                yield TurnError(exc.user_text())
                return
            finally:
                call.set("gen_ai.usage.input_tokens", out.prompt_tokens)
                call.set("gen_ai.usage.output_tokens", out.completion_tokens)
                call.set("gen_ai.response.finish_reasons", [out.finish])
                if recording():
                    call.content("gen_ai.output.messages", _output_json(out))
                call.end()
            state.prompt_tokens += out.prompt_tokens
            state.completion_tokens += out.completion_tokens
            assistant = Message("assistant", out.text, tool_calls=out.calls)
            await self.memory.append(sid, assistant)
            history.append(assistant)
            state.step, state.calls, state.results = step, list(out.calls), {}
            if checkpoint is not None:
                await checkpoint(state)
            if not out.calls:
                yield TurnDone(out.text, step, state.prompt_tokens, state.completion_tokens,
                               forced_final=final)
                return
            async for ev in self._run_tools(state, actor, turn, checkpoint):
                yield ev
                if isinstance(ev, TurnParked):
                    return
        yield TurnError("the agent stopped without an answer")  # unreachable by construction

    def _model_span(self, turn: Span, context: list[Message], settings: ChatSettings) -> Span:
        """Start the span of one model call (GenAI ``chat``), child of the turn."""
        name = getattr(self.model, "name", "model")
        call = start(f"chat {name}", {"gen_ai.operation.name": "chat",
                                      "gen_ai.request.model": name,
                                      "gen_ai.request.temperature": settings.temperature,
                                      "gen_ai.request.max_tokens": settings.max_tokens},
                     parent=turn, client=True)
        if recording():
            call.content("gen_ai.input.messages", json.dumps(
                [{"role": m.role, "content": m.content} for m in context], ensure_ascii=False))
        return call

    def _settings(self, tool_choice: str | None) -> ChatSettings:
        base = self.options.settings
        return ChatSettings(
            temperature=base.temperature,
            max_tokens=base.max_tokens,
            tool_choice=tool_choice or base.tool_choice,
            stop=list(base.stop),
            seed=base.seed,
        )

    async def _model_step(
        self,
        context: list[Message],
        specs: Sequence[ToolSpec],
        settings: ChatSettings,
        out: _StepOutput,
        call: Span,
    ) -> AsyncIterator[AgentEvent]:
        attempts = self.options.model_retries + 1
        t0 = time.perf_counter()
        for attempt in range(attempts):
            streamed = False
            try:
                async for ev in within(call, self.model.chat(context, specs, settings=settings)):
                    if isinstance(ev, TextDelta):
                        streamed = True
                        out.text += ev.text
                        yield ev
                    elif isinstance(ev, ToolCallEvent):
                        out.calls.append(ev.call)
                    elif isinstance(ev, Usage):
                        out.prompt_tokens += ev.prompt_tokens
                        out.completion_tokens += ev.completion_tokens
                        yield ev
                    elif isinstance(ev, Finish):
                        out.finish = ev.reason
                _count_tokens(out, time.perf_counter() - t0)
                return
            except ModelOutputError:
                # Broken tool JSON even after the backend's repair: retry once without
                # having shown anything, then give a clear error.
                if streamed or attempt == attempts - 1:
                    raise
                out.calls.clear()

    async def _run_tools(
        self, state: TurnState, actor: str, turn: Span, checkpoint: Checkpoint | None
    ) -> AsyncIterator[AgentEvent]:
        """Run the step's calls that have no result yet; append their tool messages when all are in.

        A call whose approver parks it (:class:`ApprovalParked`) gets no result: the others
        finish, then the turn ends in :class:`TurnParked` with the state saved.
        """
        todo = [c for c in state.calls if c.id not in state.results]
        for call in todo:
            yield ToolStarted(call, state.step)
        with activate(turn):  # each task copies the context: gateway spans are the turn's
            tasks = [
                asyncio.ensure_future(self.gateway.execute(c, session_id=state.session_id,
                                                           actor=actor))
                for c in todo
            ]
        parked: list[ApprovalRequest] = []
        try:
            for fut in asyncio.as_completed(tasks):
                try:
                    res = await fut
                except ApprovalParked as signal:
                    parked.append(signal.request)
                    continue
                state.results[res.call_id] = res
                if checkpoint is not None:
                    await checkpoint(state)
                yield ToolFinished(res, state.step)
        finally:
            for t in tasks:
                t.cancel()
        if parked:
            order = {c.id: i for i, c in enumerate(state.calls)}
            parked.sort(key=lambda r: order.get(r.call_id or "", 0))
            yield TurnParked(tuple(parked), state.step)
            return
        for call in state.calls:  # tool messages in call order, whatever order they finished in
            res = state.results[call.id]
            msg = Message("tool", res.for_model(), tool_call_id=call.id, name=call.name)
            await self.memory.append(state.session_id, msg)
            state.history.append(msg)
        state.calls, state.results = [], {}
        if checkpoint is not None:
            await checkpoint(state)

    async def ask(self, user_text: str, *, session_id: str | None = None) -> TurnDone:
        """Run a turn to completion and return its result (raises on :class:`TurnError`)."""
        done: TurnDone | None = None
        async for ev in self.run(user_text, session_id=session_id):
            if isinstance(ev, TurnDone):
                done = ev
            elif isinstance(ev, TurnError):
                raise BastionError(ev.message)
        assert done is not None
        return done


def _count_tokens(out: _StepOutput, seconds: float) -> None:
    """Add one model call's tokens and speed to the process metrics."""
    METRICS.tokens.inc(out.prompt_tokens, direction="input")
    METRICS.tokens.inc(out.completion_tokens, direction="output")
    if out.completion_tokens and seconds > 0:
        METRICS.tokens_per_second.observe(out.completion_tokens / seconds)


def _output_json(out: _StepOutput) -> str:
    """Return the model's reply as GenAI ``gen_ai.output.messages`` JSON (text and tool calls)."""
    parts: list[dict[str, object]] = []
    if out.text:
        parts.append({"type": "text", "content": out.text})
    parts += [{"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
              for c in out.calls]
    return json.dumps([{"role": "assistant", "parts": parts, "finish_reason": out.finish}],
                      ensure_ascii=False, default=str)

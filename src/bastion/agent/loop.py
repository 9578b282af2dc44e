"""The agent loop: messages -> model -> tool calls -> gateway -> results -> ... -> answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from bastion.agent.events import AgentEvent, ToolFinished, ToolStarted, TurnDone, TurnError
from bastion.errors import BastionError, ModelOutputError
from bastion.llm.base import Model
from bastion.llm.messages import (
    ChatSettings,
    Finish,
    Message,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from bastion.memory.base import ConversationMemory, EphemeralMemory
from bastion.security.gateway import Gateway, ToolResult

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
        self, user_text: str, *, session_id: str | None = None, actor: str = "agent"
    ) -> AsyncIterator[AgentEvent]:
        """Run one user turn, streaming events; ends in :class:`TurnDone` or :class:`TurnError`.

        ``session_id`` is a session's name or id; tool calls and their audit records carry
        the id it is stored under (a rename does not orphan them).
        """
        sid = await self.memory.open_session(session_id or self.new_session_id())
        history = await self.memory.history(sid)
        user = Message("user", user_text)
        await self.memory.append(sid, user)
        history.append(user)
        system = Message("system", self.options.system_prompt)
        specs = self.tool_specs()
        prompt_tokens = completion_tokens = 0
        max_steps = self.options.max_steps
        for step in range(1, max_steps + 2):
            final = step > max_steps
            context = await self.memory.build_context(sid, system, history, user_text)
            if final:
                context = [*context, Message("user", FINAL_NUDGE)]
            settings = self._settings("none" if final or not specs else None)
            out = _StepOutput()
            try:
                async for ev in self._model_step(context, [] if final else specs, settings, out):
                    yield ev
            except BastionError as exc:
                yield TurnError(exc.user_text())
                return
            prompt_tokens += out.prompt_tokens
            completion_tokens += out.completion_tokens
            assistant = Message("assistant", out.text, tool_calls=out.calls)
            await self.memory.append(sid, assistant)
            history.append(assistant)
            if not out.calls:
                yield TurnDone(out.text, step, prompt_tokens, completion_tokens, forced_final=final)
                return
            async for ev in self._run_tools(out.calls, step, sid, actor, history):
                yield ev
        yield TurnError("the agent stopped without an answer")  # unreachable by construction

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
    ) -> AsyncIterator[AgentEvent]:
        attempts = self.options.model_retries + 1
        for attempt in range(attempts):
            streamed = False
            try:
                async for ev in self.model.chat(context, specs, settings=settings):
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
                return
            except ModelOutputError:
                # Broken tool JSON even after the backend's repair: retry once without
                # having shown anything, then give a clear error.
                if streamed or attempt == attempts - 1:
                    raise
                out.calls.clear()

    async def _run_tools(
        self,
        calls: list[ToolCall],
        step: int,
        sid: str,
        actor: str,
        history: list[Message],
    ) -> AsyncIterator[AgentEvent]:
        for call in calls:
            yield ToolStarted(call, step)
        tasks = [
            asyncio.ensure_future(self.gateway.execute(c, session_id=sid, actor=actor))
            for c in calls
        ]
        results: dict[str, ToolResult] = {}
        try:
            for fut in asyncio.as_completed(tasks):
                res = await fut
                results[res.call_id] = res
                yield ToolFinished(res, step)
        finally:
            for t in tasks:
                t.cancel()
        for call in calls:  # tool messages in call order, whatever order they finished in
            res = results[call.id]
            msg = Message("tool", res.for_model(), tool_call_id=call.id, name=call.name)
            await self.memory.append(sid, msg)
            history.append(msg)

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

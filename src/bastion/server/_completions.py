"""``POST /v1/chat/completions``: the agent (model ``bastion-agent``) or the backend itself.

``bastion-agent`` runs the full agent (tools through the gateway) on the last user message.
Tool steps are not sent as OpenAI ``tool_calls`` (the client would try to run them); each
chunk or completion carries a ``bastion`` object instead, which OpenAI clients keep as an
extra field (``chunk.model_extra["bastion"]`` in the Python client):

- stream: ``{"type": "session", "session_id"}`` on the first chunk, then one chunk with an
  empty delta per ``tool_started`` / ``tool_finished`` event (payloads as in
  :mod:`bastion.server.events`) and per ``approval_pending`` / ``approval_resolved`` (the
  agent waits for a human: see ``routes/approvals.py``), and ``{"type": "done", ...}`` on
  the finishing chunk;
- non-stream: ``{"session_id", "steps", "forced_final", "tool_steps": [...]}``.

Any other listed model name passes straight through to the configured backend, with the
request's own ``tools`` offered and returned as ``tool_calls``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from bastion.agent.loop import Agent
from bastion.errors import BastionError
from bastion.llm.base import Model
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
)
from bastion.security.model_guard import GuardedModel
from bastion.server._openai import (
    AGENT_MODEL,
    SESSION_HEADER,
    SESSION_ID_PATTERN,
    ChatCompletionRequest,
    ChunkMaker,
    settings_from,
    to_messages,
    to_tool_specs,
    wire_tool_calls,
)
from bastion.server._turns import (
    busy_error,
    busy_sessions,
    check_session_id,
    collect_turn,
    make_agent,
    redacted_events,
)
from bastion.server.errors import ApiError, bastion_error_payload, error_body
from bastion.server.sse import DONE, StreamRedactor, sse_data, sse_response

if TYPE_CHECKING:
    from bastion.app import App

log = logging.getLogger("bastion.server")

_SID = re.compile(SESSION_ID_PATTERN)
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def model_names(app: App) -> list[str]:
    """Return the model ids the API serves: the agent, then the backend's name(s)."""
    names = [AGENT_MODEL]
    for name in (app.config.model.name, getattr(app.model, "name", None)):
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def unknown_model(model: str, app: App) -> ApiError:
    """The 404 for a model the API does not serve, listing the ones it does."""
    known = ", ".join(model_names(app))
    return ApiError(404, f"unknown model {model!r}; available: {known}", code="model_not_found",
                    param="model", fix="GET /v1/models lists the models")


def _base_settings(app: App) -> ChatSettings:
    cfg = app.config.model
    return ChatSettings(temperature=cfg.temperature, max_tokens=cfg.max_tokens)


async def chat_completions(request: Request, app: App, req: ChatCompletionRequest) -> Response:
    """Serve one chat-completions request."""
    if req.model not in model_names(app):
        raise unknown_model(req.model, app)
    if req.model == AGENT_MODEL:
        return await _agent(request, app, req)
    return await _passthrough(request, app, req)


# -- bastion-agent -------------------------------------------------------------------------


def _user_session(user: str | None) -> str | None:
    """Session id for OpenAI's ``user`` field: itself if it is a valid id, else a stable hash."""
    if not user:
        return None
    if _SID.match(user):
        return user
    return "user-" + hashlib.sha256(user.encode("utf-8")).hexdigest()[:24]


async def _agent(request: Request, app: App, req: ChatCompletionRequest) -> Response:
    messages = to_messages(req.messages)
    if messages[-1].role != "user":
        raise ApiError(400, "the last message must be the user's (role 'user')",
                       code="invalid_messages", param="messages")
    text = messages[-1].content
    extra_system = [m.content for m in messages[:-1] if m.role == "system"]
    seed = [m for m in messages[:-1] if m.role != "system"]
    header_sid = request.headers.get(SESSION_HEADER)
    given = header_sid or req.session_id or _user_session(req.user)
    sid = check_session_id(given, "session_id") if given else Agent.new_session_id()
    # a session of the caller's own: another user's name or id is simply a new one here
    settings = settings_from(req.model_copy(update={"tool_choice": None}), _base_settings(app))
    busy = busy_sessions(request)
    maker = ChunkMaker(req.model)
    public_sid = sid if given else None
    headers = {SESSION_HEADER: sid} if given else {}
    if given and sid in busy:
        raise busy_error(sid)

    async def agent() -> Agent:
        return await make_agent(app, sid, extra_system=extra_system, settings=settings,
                                seed=seed, ephemeral=not given)

    if not req.stream:
        if not busy.claim(sid):
            raise busy_error(sid)
        try:
            summary = await collect_turn(app, await agent(), text, sid)
        finally:
            busy.release(sid)
        body = maker.completion(
            summary.answer, "stop", summary.prompt_tokens, summary.completion_tokens,
            bastion={"session_id": public_sid, "steps": summary.steps,
                     "forced_final": summary.forced_final, "tool_steps": summary.tool_steps},
        )
        return JSONResponse(body, headers=headers)

    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    async def stream() -> AsyncIterator[str]:
        if not busy.claim(sid):  # lost a race with another request after the check above
            yield sse_data(busy_error(sid).as_body())
            yield DONE
            return
        try:
            yield sse_data(maker.chunk({"role": "assistant", "content": ""},
                                       bastion={"type": "session", "session_id": public_sid}))
            async for name, payload in redacted_events(app, await agent(), text, sid):
                if name == "text":
                    yield sse_data(maker.chunk({"content": payload["text"]}))
                elif name in ("tool_started", "tool_finished"):
                    yield sse_data(maker.chunk({}, bastion=payload))
                elif name == "done":
                    done = {k: v for k, v in payload.items() if k != "answer"}
                    done["session_id"] = public_sid
                    yield sse_data(maker.chunk({}, "stop", bastion=done))
                    if include_usage:
                        yield sse_data(maker.usage_chunk(payload["prompt_tokens"],
                                                         payload["completion_tokens"]))
                elif name == "error":
                    yield sse_data(error_body(502, payload["message"], code="agent_error"))
                elif name != "usage":  # e.g. approval_pending / approval_resolved
                    yield sse_data(maker.chunk({}, bastion=payload))
            yield DONE
        except BastionError as exc:
            yield sse_data(bastion_error_payload(request, exc))
            yield DONE
        except ApiError as exc:
            yield sse_data(exc.as_body())
            yield DONE
        except Exception as exc:  # never a traceback to the client
            log.error("agent stream failed: %s", app.redactor.text(f"{type(exc).__name__}: {exc}"))
            yield sse_data(error_body(500, "internal error while streaming the answer",
                                      code="internal_error"))
            yield DONE
        finally:
            busy.release(sid)

    return sse_response(stream(), headers=headers)


# -- pass-through to the backend -----------------------------------------------------------


def _check_tools(req: ChatCompletionRequest, settings: ChatSettings) -> None:
    names = {t.function.name for t in req.tools or []}
    choice = settings.tool_choice
    if choice not in ("auto", "none", "required") and choice not in names:
        raise ApiError(400, f"tool_choice names {choice!r}, which is not in tools",
                       code="invalid_tool_choice", param="tool_choice")
    if choice == "required" and not names:
        raise ApiError(400, "tool_choice 'required' needs tools", code="invalid_tool_choice",
                       param="tool_choice")


def _redacted_call(app: App, call: ToolCall) -> ToolCall:
    return ToolCall(call.name, app.redactor.data(call.arguments), id=call.id)


def _backend(app: App) -> Model:
    """The configured model, behind the same secret guard the agent's model calls pass."""
    if app.config.secrets.scan_model_messages:
        return GuardedModel(app.model, app.redactor)
    return app.model


async def _passthrough(request: Request, app: App, req: ChatCompletionRequest) -> Response:
    model = _backend(app)
    messages: list[Message] = to_messages(req.messages)
    specs = to_tool_specs(req.tools)
    settings = settings_from(req, _base_settings(app))
    _check_tools(req, settings)
    maker = ChunkMaker(req.model)

    if not req.stream:
        text, calls, reason, prompt, completion = "", [], "stop", 0, 0
        async for ev in model.chat(messages, specs, settings=settings):
            if isinstance(ev, TextDelta):
                text += ev.text
            elif isinstance(ev, ToolCallEvent):
                calls.append(_redacted_call(app, ev.call))
            elif isinstance(ev, Usage):
                prompt += ev.prompt_tokens
                completion += ev.completion_tokens
            elif isinstance(ev, Finish):
                reason = ev.reason
        finish = "tool_calls" if calls else _FINISH.get(reason, "stop")
        content = app.redactor.text(text) if text or not calls else None
        return JSONResponse(maker.completion(content, finish, prompt, completion, calls=calls))

    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    async def stream() -> AsyncIterator[str]:
        red = StreamRedactor(app.redactor)
        calls: list[ToolCall] = []
        reason, prompt, completion = "stop", 0, 0
        try:
            yield sse_data(maker.chunk({"role": "assistant", "content": ""}))
            async for ev in model.chat(messages, specs, settings=settings):
                if isinstance(ev, TextDelta):
                    piece = red.feed(ev.text)
                    if piece:
                        yield sse_data(maker.chunk({"content": piece}))
                elif isinstance(ev, ToolCallEvent):
                    call = _redacted_call(app, ev.call)
                    wire = wire_tool_calls([call], indexed=True)[0]
                    wire["index"] = len(calls)
                    calls.append(call)
                    yield sse_data(maker.chunk({"tool_calls": [wire]}))
                elif isinstance(ev, Usage):
                    prompt += ev.prompt_tokens
                    completion += ev.completion_tokens
                elif isinstance(ev, Finish):
                    reason = ev.reason
            tail = red.flush()
            if tail:
                yield sse_data(maker.chunk({"content": tail}))
            finish = "tool_calls" if calls else _FINISH.get(reason, "stop")
            yield sse_data(maker.chunk({}, finish))
            if include_usage:
                yield sse_data(maker.usage_chunk(prompt, completion))
            yield DONE
        except BastionError as exc:
            yield sse_data(bastion_error_payload(request, exc))
            yield DONE
        except Exception as exc:  # never a traceback to the client
            log.error("model stream failed: %s", app.redactor.text(f"{type(exc).__name__}: {exc}"))
            yield sse_data(error_body(500, "internal error while streaming the answer",
                                      code="internal_error"))
            yield DONE

    return sse_response(stream())
